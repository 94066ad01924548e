import { execFile, fork, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import pg from 'pg';
import { busKeys } from '../bus/keys.js';
import { OutboxRelay, type OutboxRelayOptions } from '../bus/outbox/relay.js';
import { installTriggers } from '../bus/outbox/triggers.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { DATABASE_URL, TestSchema } from './helpers/pg.js';
import { FIXTURES, WorkerProc } from './helpers/procs.js';
import { cleanupPrefix, randomPrefix, REDIS_URL, TestRedis } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli/cachebus.js', import.meta.url));

let prefix: string;
let schema: TestSchema;
const cleanups: (() => Promise<unknown>)[] = [];
const product = { name: 'products', key: 'id', columns: ['name', 'price'] };

beforeEach(async () => {
  prefix = randomPrefix();
  schema = await TestSchema.create();
  await schema.pool.query('CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL)');
  await schema.pool.query("INSERT INTO products SELECT g, 'p' || g, 1 FROM generate_series(1, 100) g");
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  await schema.drop();
  await cleanupPrefix(prefix);
});

function relay(extra: Partial<OutboxRelayOptions> = {}): OutboxRelay {
  const r = new OutboxRelay({ pg: schema.url, redis: REDIS_URL, namespace: 'shop', prefix, pollMs: 50, ...extra });
  cleanups.push(() => r.stop());
  return r;
}

async function cache(extra: Record<string, unknown> = {}): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 10_000, ...extra });
  cleanups.push(() => c.close());
  return c;
}

const outboxKeys = async (): Promise<string[]> =>
  (await schema.pool.query<{ key: string }>('SELECT key FROM cachebus_outbox ORDER BY id')).rows.map((r) => r.key);

/** Every key published on the stream so far (with repeats). */
async function streamKeys(url = REDIS_URL): Promise<string[]> {
  const r = new Redis(url);
  try {
    const entries = await r.xrange(busKeys(prefix, 'shop').stream, '-', '+');
    return entries.flatMap(([, f]) => {
      const i = f.indexOf('k');
      return i >= 0 ? (JSON.parse(f[i + 1]!) as string[]) : [];
    });
  } finally {
    r.disconnect();
  }
}

describe('triggers', () => {
  it('record the key of every inserted, updated and deleted row, in the same transaction', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    await schema.pool.query("INSERT INTO products VALUES (101, 'new', 2)");
    await schema.pool.query('UPDATE products SET price = 3 WHERE id IN (1, 2)');
    await schema.pool.query('UPDATE products SET id = 200 WHERE id = 3'); // both keys
    await schema.pool.query('DELETE FROM products WHERE id = 4');
    const c = await schema.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('UPDATE products SET price = 9 WHERE id = 5');
      await c.query('ROLLBACK');
    } finally {
      c.release();
    }
    await schema.pool.query('UPDATE products SET price = price WHERE id < 0'); // no row: no record
    expect(await outboxKeys()).toEqual(expect.arrayContaining(['products:101', 'products:1', 'products:2', 'products:3', 'products:200', 'products:4']));
    expect((await outboxKeys()).filter((k) => k === 'products:5')).toEqual([]);
    expect(await outboxKeys()).toHaveLength(6);
  });

  it('are idempotent to install again, and reject names that are not plain identifiers', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    await schema.pool.query('UPDATE products SET price = 2 WHERE id = 1');
    expect(await outboxKeys()).toEqual(['products:1']);
    await expect(installTriggers(schema.pool, { name: 'products; DROP TABLE x', columns: [] }, { namespace: 'shop' })).rejects.toThrow(/must match/);
    await expect(installTriggers(schema.pool, product, { namespace: "sh'op" })).rejects.toThrow(/namespace/);
  });
});

describe('relay', () => {
  it('publishes the changed keys and deletes what it published; caches drop them', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const c = await cache();
    await c.get('products:42', () => ({ id: 42 }));
    await c.get('products:43', () => ({ id: 43 }));
    const r = relay();
    await r.start();
    const received = waitForEvent<{ keys: number; dropped: number }>(c, 'received');
    await schema.pool.query('UPDATE products SET price = 5 WHERE id = 42');
    expect(await received).toMatchObject({ keys: 1, dropped: 1 });
    expect(c.peek('products:42')).toBeUndefined();
    expect(c.peek('products:43')).toEqual({ id: 43 });
    await until(async () => (await outboxKeys()).length === 0, 10_000, 'outbox drained');
    expect(r.health().ok).toBe(true);
  });

  it('does not depend on NOTIFY: with LISTEN off, polling delivers', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const c = await cache();
    await c.get('products:7', () => 7);
    const r = relay({ listen: false, pollMs: 20 });
    await r.start();
    const received = waitForEvent(c, 'received');
    await schema.pool.query('DELETE FROM products WHERE id = 7');
    await received;
    expect(c.peek('products:7')).toBeUndefined();
    expect(r.stats.notifications).toBe(0);
  });

  it('a bulk change goes out in batches of many keys per entry', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    await schema.pool.query("INSERT INTO products SELECT g, 'p' || g, 1 FROM generate_series(101, 5000) g");
    const r = relay({ batchSize: 1000 });
    await r.start();
    await until(() => r.stats.rows === 4900, 20_000, 'rows published');
    expect(r.stats.batches).toBeLessThanOrEqual(6);
    expect(new Set(await streamKeys()).size).toBe(4900);
  });

  it('several relays share the outbox: every key published, no row taken twice', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const relays = [relay({ batchSize: 200 }), relay({ batchSize: 200 }), relay({ batchSize: 200 })];
    await Promise.all(relays.map((x) => x.start()));
    for (let i = 0; i < 20; i++) {
      await schema.pool.query("INSERT INTO products SELECT g, 'p', 1 FROM generate_series($1::int, $1::int + 199) g", [1000 + i * 200]);
    }
    await until(() => relays.reduce((n, x) => n + x.stats.rows, 0) >= 4000, 30_000, 'rows published');
    expect(relays.reduce((n, x) => n + x.stats.rows, 0)).toBe(4000);
    expect(await outboxKeys()).toEqual([]);
    const keys = await streamKeys();
    expect(new Set(keys).size).toBe(4000);
    expect(keys).toHaveLength(4000);
  });

  it('kill -9 between XADD and COMMIT loses nothing: another relay publishes the batch again', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    await schema.pool.query('UPDATE products SET price = 2 WHERE id BETWEEN 1 AND 50');
    const child: ChildProcess = fork(`${FIXTURES}outbox-relay.js`, [JSON.stringify({
      pg: schema.url, redis: REDIS_URL, namespace: 'shop', prefix, pollMs: 50, stall: true,
    })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const exited = new Promise((r) => child.once('exit', r));
    cleanups.push(async () => { child.kill('SIGKILL'); await exited; });
    const published = await waitForEvent<{ event: string; keys: string[] }>(child, 'message', (m) => m.event === 'published', 15_000);
    expect(published.keys).toHaveLength(50);
    child.kill('SIGKILL');
    await exited;
    expect(await outboxKeys()).toHaveLength(50); // not deleted: the transaction died with the process
    const r = relay();
    await r.start();
    await until(async () => (await outboxKeys()).length === 0, 15_000, 'outbox drained by the second relay');
    expect(r.stats.rows).toBe(50);
    const keys = await streamKeys();
    for (let i = 1; i <= 50; i++) expect(keys.filter((k) => k === `products:${i}`)).toHaveLength(2); // at-least-once
  });

  it('survives a Redis outage: retries with backoff, then delivers', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const redis = await TestRedis.start();
    cleanups.push(() => redis.dispose());
    const r = relay({ redis: redis.url, pollMs: 20 });
    await r.start();
    await redis.stop();
    await schema.pool.query('UPDATE products SET price = 3 WHERE id = 9');
    await until(() => r.stats.errors > 0, 20_000, 'relay errors while Redis is down');
    expect(r.health().ok).toBe(false);
    expect(await outboxKeys()).toEqual(['products:9']);
    await redis.start();
    await until(async () => (await outboxKeys()).length === 0, 20_000, 'outbox drained after Redis is back');
    expect(await streamKeys(redis.url)).toContain('products:9');
    await until(() => r.health().ok, 10_000, 'healthy again');
  });

  it('survives its Postgres connections being killed', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const url = new URL(schema.url);
    url.searchParams.set('application_name', `relay_${prefix}`);
    const r = relay({ pg: url.toString(), pollMs: 20 });
    await r.start();
    await schema.pool.query('UPDATE products SET price = 4 WHERE id = 10');
    await until(async () => (await outboxKeys()).length === 0, 10_000, 'first drain');
    const admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
    try {
      const killed = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [`relay_${prefix}`]);
      expect(killed.rowCount).toBeGreaterThan(0);
    } finally {
      await admin.end();
    }
    await schema.pool.query('UPDATE products SET price = 4 WHERE id = 11');
    await until(async () => (await outboxKeys()).length === 0, 15_000, 'drained after the kill');
    expect(await streamKeys()).toContain('products:11');
  });

  it('a backend terminated mid-batch (after XADD, before DELETE) never crashes the process; the relay keeps relaying (issue 12 case 14)', async () => {
    const crashes: Error[] = [];
    const onCrash = (err: Error): void => { crashes.push(err); };
    process.on('uncaughtException', onCrash);
    cleanups.push(async () => { process.off('uncaughtException', onCrash); });
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const url = new URL(schema.url);
    url.searchParams.set('application_name', `relay_mid_${prefix}`);
    let atPublish!: () => void;
    const reached = new Promise<void>((r) => { atPublish = r; });
    let resume!: () => void;
    const gate = new Promise<void>((r) => { resume = r; });
    let first = true;
    const r = relay({ pg: url.toString(), pollMs: 20, listen: false, afterPublish: async () => {
      if (!first) return;
      first = false;
      atPublish();
      await gate;
    } });
    await r.start();
    await schema.pool.query('UPDATE products SET price = 4 WHERE id = 20');
    await reached; // the batch's transaction is open, idle, between XADD and DELETE
    const killed = await schema.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'`, [`relay_mid_${prefix}`]);
    expect(killed.rowCount).toBe(1);
    await until(async () => (await schema.pool.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'`, [`relay_mid_${prefix}`])).rowCount === 0, 10_000, 'the backend gone');
    resume();
    await until(() => r.stats.errors >= 1, 10_000, 'the failed batch counted');
    await until(async () => (await outboxKeys()).length === 0, 15_000, 'the batch published again and deleted');
    await schema.pool.query('UPDATE products SET price = 4 WHERE id = 21');
    await until(async () => (await streamKeys()).includes('products:21'), 15_000, 'a later change relayed');
    expect((await streamKeys()).filter((k) => k === 'products:20')).toHaveLength(2); // at-least-once
    expect(crashes).toEqual([]);
  });

  it('a relay process whose backend is terminated mid-batch keeps running and relaying (issue 12 case 14)', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const url = new URL(schema.url);
    url.searchParams.set('application_name', `relay_proc_${prefix}`);
    const child: ChildProcess = fork(`${FIXTURES}outbox-relay.js`, [JSON.stringify({
      pg: url.toString(), redis: REDIS_URL, namespace: 'shop', prefix, pollMs: 20, listen: false, pauseOnce: true,
    })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let exitCode: number | null | undefined;
    const exited = new Promise((r) => child.once('exit', (code) => { exitCode = code; r(code); }));
    cleanups.push(async () => { child.kill('SIGKILL'); await exited; });
    const first = waitForEvent<{ event: string; keys: string[] }>(child, 'message', (m) => m.event === 'published', 15_000);
    await schema.pool.query('UPDATE products SET price = 4 WHERE id = 30');
    expect((await first).keys).toEqual(['products:30']);
    const killed = await schema.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'`, [`relay_proc_${prefix}`]);
    expect(killed.rowCount).toBe(1);
    await until(async () => (await schema.pool.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'`, [`relay_proc_${prefix}`])).rowCount === 0, 10_000, 'the backend gone');
    child.send('go');
    await schema.pool.query('UPDATE products SET price = 4 WHERE id = 31');
    await until(async () => exitCode !== undefined || (await streamKeys()).includes('products:31'), 15_000, 'a later change relayed');
    expect(exitCode).toBeUndefined(); // still running
    await until(async () => (await outboxKeys()).length === 0, 15_000, 'outbox drained');
  });

  it('keys whose JSON encoding outgrows their bytes (quotes, backslashes) never make an entry a reader refuses (issue 12 case 16)', async () => {
    await schema.pool.query('CREATE TABLE things (id text PRIMARY KEY, v int NOT NULL)');
    const ids = Array.from({ length: 999 }, (_, i) => `t${i}${'\\"'.repeat(20)}`);
    await schema.pool.query('INSERT INTO things SELECT unnest($1::text[]), 1', [ids]);
    await installTriggers(schema.pool, { name: 'things', columns: ['v'] }, { namespace: 'shop' });
    const c = await cache();
    for (const id of ids) await c.get(`things:${id}`, () => ({ id }));
    const bad: unknown[] = [];
    c.on('badEntry', (b) => bad.push(b));
    const r = relay();
    await r.start();
    await schema.pool.query('UPDATE things SET v = 2'); // 999 changes, one statement, one batch
    await until(() => ids.every((id) => c.peek(`things:${id}`) === undefined), 15_000, 'all 999 keys dropped');
    expect(bad).toEqual([]);
    const rr = new Redis(REDIS_URL);
    try {
      const entries = await rr.xrange(busKeys(prefix, 'shop').stream, '-', '+');
      expect(entries.length).toBeGreaterThan(1); // split
      for (const [, f] of entries) expect(f.reduce((n, x) => n + x.length, 0)).toBeLessThanOrEqual(65_536);
    } finally {
      rr.disconnect();
    }
    await until(async () => (await outboxKeys()).length === 0, 10_000, 'outbox drained');
  });

  it('an outbox table that does not exist is counted as errors and reported by health, never a crash', async () => {
    const r = relay({ outbox: 'no_such_outbox', pollMs: 20 });
    await r.start();
    await until(() => r.stats.errors >= 2, 10_000, 'errors counted');
    expect(r.health()).toMatchObject({ ok: false, detail: { lastError: expect.stringMatching(/no_such_outbox/) } });
  });
});

describe('as a user would: install-triggers, cachebus sidecar, psql', () => {
  it('psql UPDATE drops products:42 in every worker; SIGTERM stops the sidecar cleanly', async () => {
    const table = `${schema.name}.products`;
    const install = await run('node', [CLI, 'install-triggers', '--table', table, '--namespace', 'shop', '--database', DATABASE_URL]);
    expect(install.stdout).toMatch(/installed cachebus_shop_[0-9a-f]{8}_ins/);

    const workers = await Promise.all([1, 2, 3].map(() => WorkerProc.start({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 100 })));
    cleanups.push(() => Promise.all(workers.map((w) => w.stop())));
    for (const w of workers) await w.call('get', { key: 'products:42', value: { id: 42, price: 1 } });

    const sidecar = spawn('node', [CLI, 'sidecar', '--namespace', 'shop', '--prefix', prefix, '--database', DATABASE_URL,
      '--redis', REDIS_URL, '--port', '0', '--services', 'outbox', '--outbox-table', `${schema.name}.cachebus_outbox`], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((r) => sidecar.once('exit', (code) => r(code)));
    cleanups.push(async () => { sidecar.kill('SIGKILL'); await exited; });
    let out = '';
    sidecar.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
    await until(() => out.includes('running outbox'), 15_000, 'sidecar ready');
    const port = Number(/:(\d+)\s*$/m.exec(out)?.[1]);
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);

    const drops = workers.map((w) => w.wait<{ dropped: number }>('received', (p) => p.dropped === 1, 15_000));
    await run('psql', [DATABASE_URL, '-v', 'ON_ERROR_STOP=1', '-c', `UPDATE ${table} SET price = 9.99 WHERE id = 42`]);
    await Promise.all(drops);
    for (const w of workers) expect(await w.call('peek', { key: 'products:42' })).toBeNull();

    sidecar.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toMatch(/SIGTERM, stopping/);
  });
});
