import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { DATABASE_URL, TestSchema } from './helpers/pg.js';
import { cleanupPrefix, freePort, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { waitForEvent, until } from './helpers/wait.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli/cachebus.js', import.meta.url));
let prefix: string;
let cache: Cache<{}>;

describe('cachebus CLI', () => {
  beforeEach(async () => {
    prefix = randomPrefix();
    cache = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 100 });
  });
  afterEach(async () => {
    await cache.close();
    await cleanupPrefix(prefix);
  });

  it('publish drops a key and a tag in a running cache', async () => {
    await cache.get('product:42', () => 1);
    await cache.get('product:43', () => 1, { tags: ['category:7'] });
    const got = waitForEvent(cache, 'received');
    const { stdout } = await run('node', [CLI, 'publish', '--namespace', 'shop', '--prefix', prefix, '--redis', REDIS_URL, 'product:42', '--tag', 'category:7']);
    expect(stdout.trim()).toMatch(/^\d+-\d+$/);
    await got;
    expect(cache.peek('product:42')).toBeUndefined();
    expect(cache.peek('product:43')).toBeUndefined();
  });

  it('tail prints invalidations as they flow, with origin and lag', async () => {
    const child = spawn('node', [CLI, 'tail', '--namespace', 'shop', '--prefix', prefix, '--redis', REDIS_URL, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    try {
      await until(() => err.includes('tailing'), 10_000, 'tail to start');
      await cache.invalidate('product:42');
      await until(() => out.includes('product:42'), 10_000, 'the tail line');
      const line = JSON.parse(out.trim().split('\n')[0]!) as { keys: string[]; origin: string; lagMs: number };
      expect(line.keys).toEqual(['product:42']);
      expect(line.origin).toBe(cache.bus!.origin);
      expect(line.lagMs).toBeGreaterThanOrEqual(0);
    } finally {
      child.kill('SIGTERM');
    }
  });
});

interface Outcome { code: number | null; stdout: string; stderr: string; ms: number }

/** Runs the built CLI to its end (killed after `timeoutMs`), with its exit code and output. */
function cli(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Outcome> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('node', [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`cachebus ${args.join(' ')} still running after ${opts.timeoutMs ?? 20_000} ms:\n${stderr}`)); }, opts.timeoutMs ?? 20_000);
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr, ms: Date.now() - started }); });
  });
}

/** A failure: the exit code, and stderr is exactly one line with no stack trace. */
function expectOneLine(o: Outcome, code: number, message: RegExp): void {
  expect({ code: o.code, stderr: o.stderr }).toMatchObject({ code });
  const lines = o.stderr.trimEnd().split('\n');
  expect(lines, o.stderr).toHaveLength(1);
  expect(o.stderr).not.toMatch(/^\s+at /m);
  expect(lines[0]).toMatch(message);
}

const unreachableRedis = async (): Promise<string> => `redis://127.0.0.1:${await freePort()}`;
const unreachablePg = async (): Promise<string> => `postgres://postgres@127.0.0.1:${await freePort()}/test`;

describe('cachebus CLI: every failure is one line and an exit code', () => {
  it('publish and tail with an unreachable --redis: exit 1, one line naming --redis', async () => {
    const redis = await unreachableRedis();
    for (const cmd of ['publish', 'tail']) {
      const o = await cli([cmd, '--namespace', 'shop', '--redis', redis, ...(cmd === 'publish' ? ['k'] : [])]);
      expectOneLine(o, 1, new RegExp(`^cachebus ${cmd}: cannot reach Redis at redis://127\\.0\\.0\\.1:\\d+.*ECONNREFUSED.*--redis`));
    }
  });

  it('usage errors exit 2 with one line: bad namespace, missing flag, bad URLs, empty --services, bad port', async () => {
    expectOneLine(await cli(['publish', '--namespace', 'bad ns!', 'k']), 2, /^cachebus publish: --namespace must be .*"bad ns!".*--help/);
    expectOneLine(await cli(['publish', 'k']), 2, /--namespace is required/);
    expectOneLine(await cli(['dead-letters', '--namespace', 'shop', '--redis', '::::']), 2, /^cachebus dead-letters: --redis must be a redis:\/\/ or rediss:\/\/ URL \(got "::::"\)/);
    expectOneLine(await cli(['install-triggers', '--table', 'products', '--namespace', 'shop', '--database', 'notaurl']), 2, /--database must be a postgres:\/\/ or postgresql:\/\/ URL \(got "notaurl"\)/);
    expectOneLine(await cli(['sidecar', '--namespace', 'shop', '--services', '']), 2, /--services must name at least one service \(known: outbox, write-behind\)/);
    expectOneLine(await cli(['sidecar', '--namespace', 'shop', '--port', '99999']), 2, /--port must be 0-65535 \(got 99999\)/);
    expectOneLine(await cli(['nosuch']), 2, /unknown command "nosuch"/);
    expectOneLine(await cli(['sidecar', 'shop']), 2, /^cachebus sidecar: unexpected argument "shop"/);
  });

  it('demo usage errors are one sentence and exit 2 too, not the whole usage', async () => {
    expectOneLine(await cli(['demo', '--duration', '1 fortnight']), 2, /^cachebus demo: --duration must look like 8, 8s or 800ms \(got 1 fortnight\) \(see cachebus demo --help\)$/);
    expectOneLine(await cli(['demo', '--workers', '0']), 2, /^cachebus demo: --workers must be an integer >= 1/);
    expectOneLine(await cli(['demo', '--scenario', 'nosuch']), 2, /^cachebus demo: .*unknown scenario.*nosuch/);
    expectOneLine(await cli(['demo', '--bogus']), 2, /^cachebus demo: .*--bogus/);
  });

  it('install-triggers (and --uninstall) with Postgres unreachable: exit 1, one line naming --database', async () => {
    const database = await unreachablePg();
    expectOneLine(await cli(['install-triggers', '--table', 'products', '--namespace', 'shop', '--database', database]), 1,
      /^cachebus install-triggers: cannot reach Postgres at postgres:\/\/postgres@127\.0\.0\.1:\d+\/test: .*ECONNREFUSED.*--database/);
    expectOneLine(await cli(['install-triggers', '--table', 'products', '--uninstall', '--database', database]), 1, /cannot reach Postgres.*--database/);
  });

  it('sidecar with Redis or Postgres unreachable exits 1 with one line, in bounded time', async () => {
    const r = await cli(['sidecar', '--namespace', 'shop', '--port', '0', '--redis', await unreachableRedis()]);
    expectOneLine(r, 1, /^cachebus sidecar: cannot reach Redis at .*--redis/);
    expect(r.ms).toBeLessThan(10_000);
    const p = await cli(['sidecar', '--namespace', 'shop', '--port', '0', '--database', await unreachablePg()]);
    expectOneLine(p, 1, /^cachebus sidecar: cannot reach Postgres at .*--database/);
  });

  it('sidecar on a busy port exits 1 with one line instead of running on', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as AddressInfo).port;
      const o = await cli(['sidecar', '--namespace', 'shop', '--port', String(port), '--services', 'outbox']);
      expectOneLine(o, 1, new RegExp(`^cachebus sidecar: cannot serve /metrics on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
    } finally {
      server.close();
    }
  });

  it('bench with --redis unreachable: exit 1, one line', async () => {
    expectOneLine(await cli(['bench', 'propagation', '--smoke', '--redis', await unreachableRedis()]), 1, /^cachebus bench: cannot reach Redis/);
  });

  it('--version prints the package version', async () => {
    const o = await cli(['--version']);
    expect(o.code).toBe(0);
    expect(o.stdout.trim()).toBe(JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
  });
});

describe('cachebus CLI: sidecar start-up and outbox discovery', () => {
  let schema: TestSchema;
  let pfx: string;
  const ns = `ns${Math.random().toString(36).slice(2, 8)}`;
  beforeEach(async () => {
    schema = await TestSchema.create();
    pfx = randomPrefix();
  });
  afterEach(async () => {
    await schema.drop();
    await cleanupPrefix(pfx);
  });

  it('dead-letters --entity counts only that entity', async () => {
    const o = await cli(['dead-letters', '--namespace', ns, '--prefix', pfx, '--entity', 'nosuch']);
    expect(o.code).toBe(0);
    expect(o.stderr.trim()).toMatch(/^-- 0 dead letter\(s\) of entity nosuch \(0 in all in /);
  });

  it('finds the outbox install-triggers made in the table\'s schema, says where it looks, relays, and stops on SIGTERM', async () => {
    await schema.pool.query('CREATE TABLE products (id int PRIMARY KEY, name text)');
    const inst = await cli(['install-triggers', '--table', `${schema.name}.products`, '--namespace', ns, '--database', DATABASE_URL]);
    expect(inst.code, inst.stderr).toBe(0);
    const missing = await cli(['sidecar', '--namespace', ns, '--prefix', pfx, '--port', '0', '--database', DATABASE_URL, '--outbox-table', `${schema.name}.nosuch`]);
    expectOneLine(missing, 1, new RegExp(`outbox table ${schema.name}\\.nosuch not found in postgres://.*--outbox-table`));

    const cache = await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix: pfx, maxEntries: 10 });
    const child = spawn('node', [CLI, 'sidecar', '--namespace', ns, '--prefix', pfx, '--port', '0', '--database', DATABASE_URL, '--services', 'outbox'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await until(() => out.includes('running outbox'), 15_000, 'the sidecar to start');
      expect(out).toContain(`outbox table ${schema.name}.cachebus_outbox`);
      expect(out).toMatch(/Redis redis:\/\/127\.0\.0\.1:6379.*Postgres postgres:\/\//);
      await cache.get('products:42', () => 'old');
      const dropped = waitForEvent(cache, 'received');
      await schema.pool.query(`INSERT INTO products VALUES (42, 'x')`);
      await dropped;
      expect(cache.peek('products:42')).toBeUndefined();
    } finally {
      child.kill('SIGTERM');
      await cache.close();
    }
    expect(await exited).toBe(0);
  });

  it('by default, without any outbox table, runs write-behind alone and says once why the relay is off', async () => {
    const db = `cbtest_db_${Math.random().toString(36).slice(2, 10)}`;
    await schema.pool.query(`CREATE DATABASE ${db}`);
    const url = new URL(DATABASE_URL);
    url.pathname = `/${db}`;
    const child = spawn('node', [CLI, 'sidecar', '--namespace', ns, '--prefix', pfx, '--port', '0', '--database', url.toString()], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await until(() => out.includes('running'), 15_000, 'the sidecar to start');
      expect(out).toMatch(/running write-behind for namespace/);
      expect(err).toMatch(new RegExp(`no outbox table cachebus_outbox in any schema of postgres://.*/${db}.*the outbox relay is off`));
    } finally {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      await schema.pool.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    }
  });
});
