import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';

/**
 * The package as a user gets it: `npm pack` (of the current build: run tsc first), installed
 * from the tarball into a fresh app with `npm install` (the registry, or npm's cache), then
 * strict tsc with skipLibCheck: false under moduleResolution node16 and bundler, and a small
 * program against the real Redis. Slow (an install and two type-checks): its own timeouts.
 */
const exec = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

let dir: string;
let app: string;
/** A second app on the other ioredis major than the one npm picked for `app`, with its own client. */
let otherApp: string;
let files: string[];
const prefix = randomPrefix();

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
      // piscina's own .d.ts imports its package.json (TS2732 without this under node16); it is
      // reached through the main entry until the piscina integration gets an entry of its own.
      ...(resolution === 'node16' ? { resolveJsonModule: true } : {}),
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
  writeFileSync(join(app, 'tsconfig.node16.json'), tsconfig('node16', true));
  writeFileSync(join(app, 'tsconfig.bundler.json'), tsconfig('bundler', false));
  writeFileSync(join(app, 'src', 'own-client.ts'), OWN_CLIENT);
  await exec('npm', ['install', join(dir, packed.filename), '@types/node@20', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: app });
  // npm installed the peers itself (ioredis 6 today); the second app pins the other major.
  const other = major(app, 'ioredis') === 5 ? 6 : 5;
  otherApp = join(dir, `app-ioredis${other}`);
  mkdirSync(join(otherApp, 'src'), { recursive: true });
  writeFileSync(join(otherApp, 'package.json'), JSON.stringify({ name: 'app-other', private: true, type: 'module' }));
  writeFileSync(join(otherApp, 'src', 'own-client.ts'), OWN_CLIENT);
  writeFileSync(join(otherApp, 'tsconfig.node16.json'), tsconfig('node16', true));
  await exec('npm', ['install', join(dir, packed.filename), `ioredis@${other}`, '@types/node@20', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: otherApp });
}, 360_000);

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

  it('type-checks a strict app (skipLibCheck: false) under moduleResolution node16 and bundler', async () => {
    const results = await Promise.allSettled(['node16', 'bundler'].map((r) =>
      exec('node', [TSC, '-p', `tsconfig.${r}.json`], { cwd: app })));
    const errors = results.map((r, i) => r.status === 'fulfilled' ? '' : `${['node16', 'bundler'][i]}: ${(r.reason as { stdout: string }).stdout}`);
    expect(errors.join('')).toBe('');
  }, 180_000);

  it('runs: createCache against the real Redis, get, invalidate', async () => {
    const { stdout } = await exec('node', ['out/main.js'], { cwd: app, env: { ...process.env, REDIS_URL, CACHEBUS_PREFIX: prefix }, timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual({ loaded: { id: 1, name: 'lamp' }, afterInvalidate: null });
  }, 30_000);

  it('ioredis and prom-client are peers: one copy of each in the app, both ioredis majors installed', async () => {
    for (const a of [app, otherApp]) {
      expect(await copies(a, 'ioredis')).toEqual([join(a, 'node_modules', 'ioredis')]);
      expect(await copies(a, 'prom-client')).toEqual([join(a, 'node_modules', 'prom-client')]);
    }
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
    const bin = join(app, 'node_modules', '.bin', 'cachebus');
    expect((await exec(bin, ['--version'])).stdout.trim()).toBe(pkg.version);
    const help = (await exec(bin, ['demo', '--help'])).stdout;
    expect(help).not.toMatch(/else a throwaway redis-server from PATH and an in-process PGlite/);
    expect(help).toMatch(/PostgreSQL is needed/);
  });
});
