import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installOutbox } from '../worker-runtime/postgres/index.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';

/**
 * README's and docs/*.md's TypeScript examples, run as written against the real Redis and
 * Postgres (test/types.test.ts type-checks them under every supported tsconfig). Each ```ts
 * block becomes a program: the block, preceded by real definitions of what it uses but does not
 * declare (the app's own `cache`, `loadProduct`, a `pg.Pool`, ...), followed by an exit. It runs
 * in its own process against the built package (dist/: run tsc first), with a key prefix of
 * its own (CACHEBUS_PREFIX) and a schema of its own (search_path) holding the tables the docs
 * use. A block that is not meant to run says so in the markdown, just before its fence:
 * `<!-- not-run: reason -->`; the list of those is pinned below so it stays small and deliberate.
 */
const exec = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

interface Block { doc: string; line: number; code: string; notRun: string | undefined; file: string }

function blocksOf(doc: string): Block[] {
  const md = readFileSync(join(ROOT, doc), 'utf8');
  return [...md.matchAll(/```ts\n([\s\S]*?)```/g)].map((m, i) => {
    const before = md.slice(0, m.index).trimEnd().split('\n').at(-1) ?? '';
    const code = m[1]!;
    // `// pool.ts: ...` names the file (pool.ts loads ./task.js): blocks of one doc share a folder
    const named = /^\/\/ ([\w-]+)\.ts:/.exec(code)?.[1];
    return {
      doc, line: md.slice(0, m.index).split('\n').length, code,
      notRun: /^<!-- not-run: (.+) -->$/.exec(before.trim())?.[1], file: named ?? `block-${i}`,
    };
  });
}

const DOCS = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
const BLOCKS = DOCS.flatMap(blocksOf);

/** The app's own names the examples use without declaring them: real values, not declarations. */
const CONTEXT: Record<string, string> = {
  Product: 'interface Product { id: number; name: string; price: number; version: number }',
  createCache: "import { createCache } from 'cachebus';",
  cache: "const cache: import('cachebus').Cache = await (await import('cachebus')).createCache({ namespace: 'shop', maxEntries: 1000, pg: process.env.DATABASE_URL });",
  loadProduct: "async function loadProduct(id: number): Promise<Product | null> { return { id, name: 'lamp', price: 3, version: 1 }; }",
  loadFromPg: "async function loadFromPg(): Promise<Product | undefined> { return { id: 42, name: 'Lamp', price: 30, version: 1 }; }",
  value: "const value: Product = { id: 42, name: 'lamp', price: 3, version: 1 };",
  computeTotal: 'async function computeTotal(orderId: number): Promise<number> { return orderId * 10; }',
  partnerIdsOf: 'function partnerIdsOf(companyId: string): number[] { return [Number(companyId)]; }',
  ids: 'const ids = [1, 2, 3];',
  pool: "const pool = new (await import('pg')).default.Pool({ connectionString: process.env.DATABASE_URL });",
  db: "const db = new (await import('pg')).default.Pool({ connectionString: process.env.DATABASE_URL });",
  entity: "import { entity } from 'cachebus/postgres';",
  transaction: "import { transaction } from 'cachebus/postgres';",
  products: "const products = (await import('cachebus/postgres')).entity<{ id: number; name: string; price: string; version?: string }>(cache, { name: 'products', key: 'id', version: 'version', columns: ['name', 'price'] });",
  log: "const log = { warn(obj: unknown): void { console.error('warn', obj); } };",
  idOf: "function idOf(key: string): number { return Number(key.split(':')[1]); }",
  ownMetrics: "const ownMetrics = { registry: new (await import('prom-client')).Registry() };",
};
/** How a name is used, where the bare word also appears in keys and SQL (`products:42`, `FROM products`). */
const USED: Record<string, RegExp> = { products: /\bproducts\.\w+\(/, entity: /\bentity(<[^>]*>)?\(/, transaction: /\btransaction\(/ };
const DEPENDS: Record<string, string[]> = {
  loadProduct: ['Product'], loadFromPg: ['Product'], value: ['Product'], products: ['cache'],
};

/** The block as a program: context it uses but does not declare, the block, then exit (it may leave servers open). */
function program(block: string): string {
  const declared = (name: string): boolean =>
    new RegExp(`(?:const|let|var|function|class|interface|type)\\s+${name}\\b|import[^;]*\\b${name}\\b[^;]*from`).test(block);
  const need = new Set<string>();
  const add = (name: string): void => {
    if (need.has(name) || declared(name)) return;
    for (const d of DEPENDS[name] ?? []) add(d);
    need.add(name);
  };
  for (const name of Object.keys(CONTEXT)) if ((USED[name] ?? new RegExp(`\\b${name}\\b`)).test(block)) add(name);
  const context = [...need].map((n) => CONTEXT[n]);
  // a module other code loads (a piscina task) is not a program: no exit
  const exit = /^export /m.test(block) ? [] : ["console.log('doc example ran');", 'process.exit(0);'];
  return [...context, block, ...exit, 'export {};', ''].join('\n');
}

/** The blocks not run, by `doc:line`, with the reason the markdown gives. Change it deliberately. */
const NOT_RUN = {
  'docs/cluster-and-threads.md:22': 'a server that runs until SIGTERM (test/cluster-noexec.test.ts runs startCluster without exec)',
  'docs/cluster-and-threads.md:191': 'a fragment of a readiness loop (pool and threads are the app\'s)',
  'docs/metrics.md:37': 'runs in a worker forked by startCluster (workerIndex throws elsewhere)',
  'docs/metrics.md:193': 'a cluster primary that serves until stopped (test/metrics-cluster.test.ts runs the same set-up)',
  'docs/scaling.md:24': 'needs a Redis Cluster at the addresses shown (test/cluster-redis.test.ts runs one on loopback)',
  'docs/scaling.md:147': 'a primary forking 8 workers that runs until SIGTERM (test/relay.test.ts runs the hub with forked workers)',
};

let dir: string;
let schema: TestSchema;
const prefixes: string[] = [];
let compileErrors = '';

const dirOf = (b: Block): string => join(dir, 'src', b.doc.replace(/\.md$/, '').replace(/\//g, '-'));
const outOf = (b: Block): string => join(dir, 'out', b.doc.replace(/\.md$/, '').replace(/\//g, '-'), `${b.file}.js`);

beforeAll(async () => {
  // inside the package, with no package.json of its own: `import 'cachebus'` is the package's
  // self-reference (its exports, i.e. dist/), and pg, ioredis, prom-client resolve as in an app
  dir = mkdtempSync(join(ROOT, '.docs-run-'));
  for (const b of BLOCKS.filter((x) => x.notRun === undefined)) {
    mkdirSync(dirOf(b), { recursive: true });
    writeFileSync(join(dirOf(b), `${b.file}.ts`), program(b.code));
  }
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, skipLibCheck: true,
      types: ['node'], rootDir: 'src', outDir: 'out', typeRoots: [join(ROOT, 'node_modules', '@types')],
    },
    include: ['src'],
  }));
  compileErrors = await exec('node', [TSC, '-p', dir], { cwd: dir }).then(() => '', (e: { stdout: string }) => e.stdout);

  schema = await TestSchema.create();
  await schema.pool.query(`
    CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL, version bigint NOT NULL DEFAULT 1,
                           updated_at timestamptz NOT NULL DEFAULT now());
    INSERT INTO products (id, name, price) SELECT i, 'product ' || i, i FROM generate_series(1, 50) i;
    CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL);
    INSERT INTO accounts VALUES (1, 100), (2, 100);
    CREATE TABLE product_views (id int PRIMARY KEY, count int NOT NULL, version bigint NOT NULL DEFAULT 0);
  `);
  await installOutbox(schema.pool);
}, 180_000);

afterAll(async () => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  await schema?.drop();
  for (const p of prefixes) await cleanupPrefix(p);
});

describe('README and docs examples run as written', () => {
  it('every ```ts block runs or is marked <!-- not-run: reason --> (and only those pinned here)', () => {
    expect(BLOCKS.length).toBeGreaterThan(20);
    const marked = Object.fromEntries(BLOCKS.filter((b) => b.notRun !== undefined).map((b) => [`${b.doc}:${b.line}`, b.notRun]));
    expect(Object.keys(marked).sort()).toEqual(Object.keys(NOT_RUN).sort());
  });

  it('the generated programs compile', () => {
    expect(compileErrors).toBe('');
  });

  for (const b of BLOCKS) {
    if (b.notRun !== undefined || /^export /m.test(b.code)) continue;
    it(`${b.doc}:${b.line} runs`, async () => {
      const prefix = randomPrefix();
      prefixes.push(prefix);
      const env = {
        ...process.env, REDIS_URL, CACHEBUS_PREFIX: prefix, DATABASE_URL: schema.url,
        PGHOST: '127.0.0.1', PGPORT: '5432', PGUSER: 'postgres', PGDATABASE: 'test', PGOPTIONS: `-c search_path=${schema.name}`,
      };
      const run = await exec('node', [outOf(b)], { cwd: dir, env, timeout: 45_000 }).then(
        (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
      );
      expect({ code: run.code, stderr: run.code === 0 ? '' : run.stderr.slice(-2000) }).toEqual({ code: 0, stderr: '' });
      expect(run.stdout).toMatch(/doc example ran\n$/);
    }, 60_000);
  }
});
