import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';

/**
 * The package as a user gets it: `npm pack` (of the current build: run tsc first), installed
 * from the tarball into fresh apps with `npm install` (the registry, or npm's cache), then
 * strict tsc with skipLibCheck: false under moduleResolution node16 and bundler, and programs
 * against the real Redis. Two apps: a cache-only one (cachebus alone: its optional peers pg,
 * bullmq, piscina, prom-client are not installed) and a full one (every peer installed, every
 * subpath used). Slow (two installs and four type-checks): its own timeouts.
 */
const exec = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

let dir: string;
let app: string;
let full: string;
/** A second app on the other ioredis major than the one npm picked for `app`, with its own client. */
let otherApp: string;
let files: string[];
const prefix = randomPrefix();

/** The optional peers, at the ranges cachebus declares (installed in the full app only). */
const PEERS = Object.entries((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { peerDependencies: Record<string, string> })
  .peerDependencies).map(([name, range]) => `${name}@${range}`);

/** Run in the cache-only app: a subpath whose library is absent fails with one sentence. */
const OPTIONAL_IMPORT = `try {
  await import('cachebus/write-behind');
  console.log(JSON.stringify({ loaded: true }));
} catch (err) {
  console.log(JSON.stringify({ name: err.name, code: err.code, message: err.message }));
}
`;

const PROGRAM = `import { createCache } from 'cachebus';

const cache = await createCache({
  redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  namespace: 'packtest',
  prefix: process.env.CACHEBUS_PREFIX ?? 'packtest',
  maxEntries: 100,
});
const loaded = await cache.get('product:1', async () => ({ id: 1, name: 'lamp' }));
await cache.invalidate('product:1');
console.log(JSON.stringify({ loaded, afterInvalidate: cache.peek('product:1') ?? null }));
await cache.close();
`;

/** What the README's first example uses without declaring it (as in test/types.test.ts). */
const README_CONTEXT = `interface Product { id: number; name: string; price: number; version: number }
async function loadProduct(id: number): Promise<Product | null> { return { id, name: 'lamp', price: 10, version: 1 }; }
const value: Product = { id: 42, name: 'lamp', price: 12, version: 2 };
`;

/** The first TypeScript example of the README (as shipped), with a random key prefix added. */
function readmeExample(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = /```ts\n([\s\S]*?)```/.exec(readme)![1]!;
  const given = "namespace: 'shop',";
  expect(block).toContain(given);
  const body = block.replace(given, `${given} prefix: process.env.CACHEBUS_PREFIX ?? 'cachebus',`);
  // The import first, then the context, the example, and what the test reads back.
  const [first, ...rest] = body.split('\n');
  return [first, README_CONTEXT, ...rest, 'console.log(JSON.stringify({ product, closed: true }));', ''].join('\n');
}

/** Every subpath in one program (type-checked in the full app; not run). */
const ALL_SUBPATHS = `import { createCache, MissingPeerError } from 'cachebus';
import { entity, transaction, installTriggers, type EntityHandle } from 'cachebus/postgres';
import { writeBehind, Flusher, type WriteBehindEntity } from 'cachebus/write-behind';
import { startCluster, startRelayHub } from 'cachebus/cluster';
import { createCachePool, threadCache } from 'cachebus/piscina';
import { cacheMetrics, serveMetrics } from 'cachebus/metrics';

export async function main(): Promise<void> {
  const cache = await createCache<{}>({ namespace: 'all', maxEntries: 10 });
  const products: EntityHandle<{ id: number; name: string }> = entity(cache, { name: 'products', table: 'products', key: 'id', columns: ['name'] });
  await transaction(cache, async (tx) => { await products.update(1, { name: 'x' }); tx.invalidate('k'); });
  const wb: WriteBehindEntity = await writeBehind(cache, { name: 'items', table: 'items', key: 'id', version: 'version', columns: ['v'] });
  void [wb, Flusher, installTriggers, startCluster, startRelayHub, createCachePool, threadCache, cacheMetrics(cache), serveMetrics, MissingPeerError];
}
`;

/**
 * The app's own ioredis client passed to createCache (ioredis is a peer: one copy, the app's).
 * Two caches on one client: B's reader duplicates the app's client, A's invalidation reaches B.
 */
const OWN_CLIENT = `import { createRequire } from 'node:module';
import { Redis } from 'ioredis';
import { createCache, type CacheOptions } from 'cachebus';

const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const options: CacheOptions = { redis, namespace: 'packtest', prefix: process.env.CACHEBUS_PREFIX ?? 'packtest', maxEntries: 100 };
const a = await createCache(options);
const b = await createCache(options);
const loaded = await b.get('product:1', async () => ({ id: 1, name: 'lamp' }));
await a.invalidate('product:1');
const deadline = Date.now() + 10_000;
while (b.peek('product:1') !== undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
const version = (createRequire(import.meta.url)('ioredis/package.json') as { version: string }).version;
console.log(JSON.stringify({ ioredis: version, loaded, droppedInB: b.peek('product:1') === undefined }));
await a.close();
await b.close();
await redis.quit();
`;

function tsconfig(resolution: 'node16' | 'bundler', emit: boolean): string {
  return JSON.stringify({
    compilerOptions: {
      target: 'ES2022',
      module: resolution === 'node16' ? 'node16' : 'esnext',
      moduleResolution: resolution,
      strict: true,
      skipLibCheck: false,
      types: ['node'],
      // No resolveJsonModule: piscina's own .d.ts needs it under node16 (TS2732), and only the
      // full app (which imports cachebus/piscina) sets it.
      ...(emit ? { outDir: 'out' } : { noEmit: true }),
    },
    include: ['src'],
  }, null, 2);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cachebus-pack-'));
  const { stdout } = await exec('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT });
  const [packed] = JSON.parse(stdout) as [{ filename: string; files: { path: string }[] }];
  files = packed.files.map((f) => f.path);
  app = join(dir, 'app');
  mkdirSync(join(app, 'src'), { recursive: true });
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  writeFileSync(join(app, 'src', 'main.ts'), PROGRAM);
  writeFileSync(join(app, 'src', 'readme.ts'), readmeExample());
  writeFileSync(join(app, 'optional.mjs'), OPTIONAL_IMPORT);
  writeFileSync(join(app, 'tsconfig.node16.json'), tsconfig('node16', true));
  writeFileSync(join(app, 'tsconfig.bundler.json'), tsconfig('bundler', false));
  full = join(dir, 'full');
  mkdirSync(join(full, 'src'), { recursive: true });
  writeFileSync(join(full, 'package.json'), JSON.stringify({ name: 'full', private: true, type: 'module' }));
  writeFileSync(join(full, 'src', 'all.ts'), ALL_SUBPATHS);
  for (const r of ['node16', 'bundler'] as const) {
    const config = JSON.parse(tsconfig(r, false)) as { compilerOptions: Record<string, unknown> };
    if (r === 'node16') config.compilerOptions.resolveJsonModule = true; // piscina's .d.ts imports its package.json
    writeFileSync(join(full, `tsconfig.${r}.json`), JSON.stringify(config, null, 2));
  }
  writeFileSync(join(app, 'src', 'own-client.ts'), OWN_CLIENT);
  const tarball = join(dir, packed.filename);
  const flags = ['--no-audit', '--no-fund', '--prefer-offline'];
  await exec('npm', ['install', tarball, '@types/node@20', ...flags], { cwd: app });
  await exec('npm', ['install', tarball, '@types/node@20', ...PEERS, ...flags], { cwd: full });
  // npm installed ioredis (a required peer) itself, at its newest major; the second app pins the other one.
  const other = major(app, 'ioredis') === 5 ? 6 : 5;
  otherApp = join(dir, `app-ioredis${other}`);
  mkdirSync(join(otherApp, 'src'), { recursive: true });
  writeFileSync(join(otherApp, 'package.json'), JSON.stringify({ name: 'app-other', private: true, type: 'module' }));
  writeFileSync(join(otherApp, 'src', 'own-client.ts'), OWN_CLIENT);
  writeFileSync(join(otherApp, 'tsconfig.node16.json'), tsconfig('node16', true));
  await exec('npm', ['install', tarball, `ioredis@${other}`, '@types/node@20', ...flags], { cwd: otherApp });
}, 420_000);

function major(appDir: string, name: string): number {
  return Number((JSON.parse(readFileSync(join(appDir, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version.split('.')[0]);
}

/** Every installed copy of a package in an app (npm ls): a peer must resolve to exactly one. */
async function copies(appDir: string, name: string): Promise<string[]> {
  const { stdout } = await exec('npm', ['ls', name, '--all', '--parseable'], { cwd: appDir });
  return [...new Set(stdout.split('\n').filter((l) => l.endsWith(`node_modules/${name}`)))];
}

afterAll(async () => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  await cleanupPrefix(prefix);
});

describe('the packed package', () => {
  it('ships the build, LICENSE and docs, not the tests, fixtures or orphan source maps', () => {
    expect(files).toContain('LICENSE');
    expect(files).toContain('dist/worker-runtime/index.d.ts');
    expect(files).toContain('dist/cli/cachebus.js');
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    // bench (cachebus bench) starts its own redis-server through these three helpers, nothing else of test/
    expect(files.filter((f) => f.startsWith('dist/test/')).sort()).toEqual(
      ['dist/test/helpers/redis-cluster.js', 'dist/test/helpers/redis.js', 'dist/test/helpers/wait.js'],
    );
    expect(files.filter((f) => /^dist\/test\/fixtures|\.test\.|test\/schemas/.test(f))).toEqual([]);
  });

  it('README and docs link only to files in the package', () => {
    const shipped = new Set(files);
    const broken: string[] = [];
    for (const doc of files.filter((f) => f.endsWith('.md'))) {
      const text = readFileSync(join(ROOT, doc), 'utf8');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target!) || target!.startsWith('#')) continue;
        const path = join(doc, '..', target!.split('#')[0]!).replace(/\\/g, '/');
        if (!shipped.has(path)) broken.push(`${doc} → ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('declares pg, bullmq, piscina, prom-client as optional peers: a cache-only install has none of them', () => {
    const installed = ['pg', 'bullmq', 'piscina', 'prom-client', '@types/pg'].filter((p) => existsSync(join(app, 'node_modules', p)));
    expect(installed).toEqual([]);
    expect(existsSync(join(app, 'node_modules', 'ioredis'))).toBe(true);
  });

  it('type-checks a strict cache-only app (skipLibCheck: false) under moduleResolution node16 and bundler', async () => {
    const results = await Promise.allSettled(['node16', 'bundler'].map((r) =>
      exec('node', [TSC, '-p', `tsconfig.${r}.json`], { cwd: app })));
    const errors = results.map((r, i) => r.status === 'fulfilled' ? '' : `${['node16', 'bundler'][i]}: ${(r.reason as { stdout: string }).stdout}`);
    expect(errors.join('')).toBe('');
  }, 180_000);

  it('type-checks every subpath in a strict app with the peers installed (node16 and bundler)', async () => {
    const results = await Promise.allSettled(['node16', 'bundler'].map((r) =>
      exec('node', [TSC, '-p', `tsconfig.${r}.json`], { cwd: full })));
    const errors = results.map((r, i) => r.status === 'fulfilled' ? '' : `${['node16', 'bundler'][i]}: ${(r.reason as { stdout: string }).stdout}`);
    expect(errors.join('')).toBe('');
  }, 180_000);

  it("runs the README's first example in the cache-only app against the real Redis", async () => {
    const { stdout } = await exec('node', ['out/readme.js'], { cwd: app, env: { ...process.env, CACHEBUS_PREFIX: prefix }, timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual({ product: { id: 42, name: 'lamp', price: 10, version: 1 }, closed: true });
  }, 30_000);

  it('cachebus/write-behind without bullmq and pg fails with one sentence naming the packages', async () => {
    const { stdout } = await exec('node', ['optional.mjs'], { cwd: app, timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual({
      name: 'MissingPeerError',
      code: 'E_MISSING_PEER',
      message: 'cachebus/write-behind needs the packages bullmq and pg, which are not installed: npm install bullmq pg',
    });
  }, 30_000);

  it('runs: createCache against the real Redis, get, invalidate', async () => {
    const { stdout } = await exec('node', ['out/main.js'], { cwd: app, env: { ...process.env, REDIS_URL, CACHEBUS_PREFIX: prefix }, timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual({ loaded: { id: 1, name: 'lamp' }, afterInvalidate: null });
  }, 30_000);

  it('ioredis and prom-client are peers: one copy of each in an app, both ioredis majors installed', async () => {
    for (const a of [app, otherApp, full]) expect(await copies(a, 'ioredis')).toEqual([join(a, 'node_modules', 'ioredis')]);
    expect(await copies(full, 'prom-client')).toEqual([join(full, 'node_modules', 'prom-client')]);
    expect([major(app, 'ioredis'), major(otherApp, 'ioredis')].sort()).toEqual([5, 6]);
  });

  it('the app passes its own ioredis client (either major): strict type-check, then two caches coherent through it', async () => {
    const check = await exec('node', [TSC, '-p', 'tsconfig.node16.json'], { cwd: otherApp }).then(() => '', (e: { stdout: string }) => e.stdout);
    expect(check).toBe('');
    for (const a of [app, otherApp]) {
      const { stdout } = await exec('node', ['out/own-client.js'], { cwd: a, env: { ...process.env, REDIS_URL, CACHEBUS_PREFIX: prefix }, timeout: 20_000 });
      const out = JSON.parse(stdout) as { ioredis: string };
      expect(out).toEqual({ ioredis: out.ioredis, loaded: { id: 1, name: 'lamp' }, droppedInB: true });
      expect(Number(out.ioredis.split('.')[0])).toBe(major(a, 'ioredis'));
    }
  }, 180_000);

  it('installs the cachebus binary: --version, and demo --help does not promise PGlite', async () => {
    expect((await exec(join(app, 'node_modules', '.bin', 'cachebus'), ['--version'])).stdout.trim()).toBe(pkg.version);
    const bin = join(full, 'node_modules', '.bin', 'cachebus');
    expect((await exec(bin, ['--version'])).stdout.trim()).toBe(pkg.version);
    const help = (await exec(bin, ['demo', '--help'])).stdout;
    expect(help).not.toMatch(/else a throwaway redis-server from PATH and an in-process PGlite/);
    expect(help).toMatch(/PostgreSQL is needed/);
  });

  it('a command that needs an optional peer says which one in the cache-only app', async () => {
    const err = await exec(join(app, 'node_modules', '.bin', 'cachebus'), ['demo', '--help']).then(() => undefined, (e: { stderr: string; code: number }) => e);
    expect(err?.code).toBe(1);
    expect(err?.stderr.trim()).toMatch(/^cachebus demo needs the package [a-z-]+, which is not installed: npm install [a-z-]+$/);
  });
});
