import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The types a user writes against, type-checked as a user's app would be: README's TypeScript
 * examples (extracted as written) and a few inference checks, against the built declarations
 * (dist/: run tsc first) under every tsconfig setting docs/options.md says is supported.
 */
const exec = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

/**
 * What doc fragments use without declaring it: the app's own functions and values, and the
 * `cache` of an earlier fragment. Each is added to a fragment that uses the name and does not
 * declare it.
 */
const CONTEXT: Record<string, string> = {
  Product: 'interface Product { id: number; name: string; price: number; version: number }',
  createCache: "import { createCache } from 'cachebus';",
  cache: "declare const cache: import('cachebus').Cache;",
  loadProduct: 'declare function loadProduct(id: number): Promise<Product | null>;',
  loadFromPg: 'declare function loadFromPg(): Promise<Product | undefined>;',
  value: 'declare const value: Product;',
  computeTotal: 'declare function computeTotal(orderId: number): Promise<number>;',
  partnerIdsOf: 'declare function partnerIdsOf(companyId: string): number[];',
  ids: 'declare const ids: number[];',
  pool: "declare const pool: import('cachebus/postgres').TransactionDb;",
  db: "declare const db: import('pg').Pool;",
  products: "declare const products: import('cachebus/postgres').EntityHandle<{ id: number; name: string; price: string; version?: string }>;",
  log: 'declare const log: { warn(obj: unknown): void };',
  idOf: 'declare function idOf(key: string): number;',
  ownMetrics: "declare const ownMetrics: { registry: import('prom-client').Registry };",
  threads: 'declare const threads: number;',
  threadStats: "import { threadStats } from 'cachebus/piscina';",
  entity: "import { entity } from 'cachebus/postgres';",
  transaction: "import { transaction } from 'cachebus/postgres';",
};
/** Where a doc means something else by a name. */
const CONTEXT_OF: Record<string, Record<string, string>> = {
  'docs/cluster-and-threads.md': { pool: "declare const pool: import('piscina').Piscina;" },
};
const DEPENDS: Record<string, string[]> = { loadProduct: ['Product'], loadFromPg: ['Product'], value: ['Product'] };

/** A fragment as a module of its own: the context it uses but does not declare, then the fragment. */
function asModule(block: string, doc = 'README.md'): string {
  const context = { ...CONTEXT, ...CONTEXT_OF[doc] };
  const declared = (name: string): boolean =>
    new RegExp(`(?:const|let|var|function|class|interface|type)\\s+${name}\\b|import[^;]*\\b${name}\\b[^;]*from`).test(block);
  const need = new Set<string>();
  const add = (name: string): void => {
    if (need.has(name) || declared(name)) return;
    need.add(name);
    for (const d of DEPENDS[name] ?? []) add(d);
  };
  for (const name of Object.keys(context)) if (new RegExp(`\\b${name}\\b`).test(block)) add(name);
  return [...Object.keys(context).filter((n) => need.has(n)).map((n) => context[n]), block, 'export {};', ''].join('\n');
}

/** Inference the README promises, and mistakes that must stay errors (@ts-expect-error fails if they type-check). */
const INFERENCE = `import { createCache, type Cache, LoadTimeoutError } from 'cachebus';
import { entity, transaction, type EntityHandle } from 'cachebus/postgres';

interface Product { id: number; name: string; price: number }
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
const assert = <T extends true>(): T | undefined => undefined;

const cache = await createCache({ redis: false, namespace: 'types', maxEntries: 10, ttl: '1h', timeout: '5s', logger: console });
const p = await cache.get('products:1', async (): Promise<Product | undefined> => ({ id: 1, name: 'lamp', price: 3 }));
assert<Equal<typeof p, Product | undefined>>();
const n = await cache.get('products:none', async () => null as Product | null, { ttl: '30s' });
assert<Equal<typeof n, Product | null | undefined>>();
const products: EntityHandle<Product> = entity<Product>(cache, { name: 'products', key: 'id', columns: ['name', 'price'] });
const row = await products.get(1);
assert<Equal<typeof row, Product | undefined>>();
await products.update(1, { price: 4 });
// @ts-expect-error not a column of Product
await products.update(1, { colour: 'red' });
await transaction(cache, async (tx) => {
  const t = await tx.get('products:1', async (): Promise<Product> => ({ id: 1, name: 'lamp', price: 3 }));
  assert<Equal<typeof t, Product | undefined>>();
});
const has: boolean = cache.has('products:1');
await cache.delete('products:1');

const typed: Cache<Product> = await createCache<Product>({ redis: false, namespace: 'types', maxEntries: 10 });
const q = await typed.get('products:2', () => ({ id: 2, name: 'desk', price: 9 }));
assert<Equal<typeof q, Product | undefined>>();
// @ts-expect-error a typed cache holds only its own type
await typed.get('products:3', () => 42);
// @ts-expect-error undefined is never a value (it means "nothing to cache")
await typed.set('products:4', undefined);
// @ts-expect-error not a duration
await createCache({ redis: false, namespace: 'types', maxEntries: 10, ttl: '1 fortnight' });
const e: unknown = undefined;
if (e instanceof LoadTimeoutError) console.log(e.code, e.key, e.timeoutMs, has);
`;

/** The ```ts blocks of a markdown file, in order. */
function tsBlocks(file: string): string[] {
  const md = readFileSync(join(ROOT, file), 'utf8');
  return [...md.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/** Docs whose examples are type-checked, README's as one module (its fragments share `cache`). */
const DOCS = ['docs/entities.md', 'docs/transactions.md', 'docs/write-behind.md', 'docs/dependencies.md', 'docs/options.md', 'docs/cluster-and-threads.md', 'docs/metrics.md'];

/** The tsconfig settings docs/options.md ("TypeScript") lists as supported. */
const SETTINGS = {
  'strict + noUncheckedIndexedAccess': { strict: true, noUncheckedIndexedAccess: true },
  'strict + noUncheckedIndexedAccess + exactOptionalPropertyTypes': { strict: true, noUncheckedIndexedAccess: true, exactOptionalPropertyTypes: true },
} as const;

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cachebus-types-'));
  const files = ['readme.ts', 'inference.ts'];
  writeFileSync(join(dir, 'readme.ts'), asModule(tsBlocks('README.md').join('\n')));
  writeFileSync(join(dir, 'inference.ts'), `${INFERENCE}\nexport {};\n`);
  for (const doc of DOCS) {
    for (const [i, block] of tsBlocks(doc).entries()) {
      const name = `${doc.replace(/^docs\/|\.md$/g, '')}-${i}.ts`;
      writeFileSync(join(dir, name), asModule(block, doc));
      files.push(name);
    }
  }
  for (const [i, options] of Object.values(SETTINGS).entries()) {
    writeFileSync(join(dir, `tsconfig.${i}.json`), JSON.stringify({
      compilerOptions: {
        target: 'ES2022', module: 'esnext', moduleResolution: 'bundler', noEmit: true, skipLibCheck: true,
        typeRoots: [join(ROOT, 'node_modules', '@types')], types: ['node'],
        paths: { cachebus: [join(ROOT, 'dist', 'worker-runtime', 'index.d.ts')], 'cachebus/*': [join(ROOT, 'dist', 'worker-runtime', '*', 'index.d.ts')], pg: [join(ROOT, 'node_modules', '@types', 'pg')], '*': [join(ROOT, 'node_modules', '*')] },
        ...options,
      },
      files,
    }));
  }
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe('types a user writes against', () => {
  it('README and the docs have TypeScript examples to check', () => {
    expect(tsBlocks('README.md').join('\n')).toMatch(/createCache/);
    expect(tsBlocks('README.md').join('\n')).toMatch(/entity<Product>\(cache, /);
    for (const doc of DOCS) expect(tsBlocks(doc).length, doc).toBeGreaterThan(0);
  });

  for (const [i, name] of Object.keys(SETTINGS).entries()) {
    it(`README's and the docs' examples and get/entity inference type-check without casts under ${name}`, async () => {
      const out = await exec('node', [TSC, '-p', `tsconfig.${i}.json`], { cwd: dir }).then(() => '', (err: { stdout: string }) => err.stdout);
      expect(out).toBe('');
    }, 120_000);
  }
});
