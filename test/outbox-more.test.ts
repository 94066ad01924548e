import { execFile, fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { busKeys } from '../bus/keys.js';
import { OutboxRelay, type OutboxRelayOptions } from '../bus/outbox/relay.js';
import { splitByEncodedSize } from '../bus/outbox/split.js';
import { installOutbox, installTriggers, uninstallTriggers } from '../bus/outbox/triggers.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { entity, transaction } from '../worker-runtime/postgres/index.js';
import { DATABASE_URL, TestSchema } from './helpers/pg.js';
import { FIXTURES } from './helpers/procs.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
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
  await schema.pool.query(`CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL);
    INSERT INTO products SELECT g, 'p' || g, 1 FROM generate_series(1, 20) g;
    CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
    INSERT INTO accounts VALUES (1, 100), (2, 200);`);
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  await schema.drop();
  await cleanupPrefix(prefix);
});

function relay(extra: Partial<OutboxRelayOptions> = {}): OutboxRelay {
  const r = new OutboxRelay({ pg: schema.url, redis: REDIS_URL, namespace: 'shop', prefix, pollMs: 20, ...extra });
  cleanups.push(() => r.stop());
  return r;
}

async function cache(extra: Record<string, unknown> = {}): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 10_000, ...extra });
  cleanups.push(() => c.close());
  return c;
}

const outbox = async (): Promise<{ namespace: string; key: string; kind: string }[]> =>
  (await schema.pool.query<{ namespace: string; key: string; kind: string }>('SELECT namespace, key, kind FROM cachebus_outbox ORDER BY id')).rows;

async function streamEntries(): Promise<Record<string, string>[]> {
  const r = new Redis(REDIS_URL);
  try {
    const entries = await r.xrange(busKeys(prefix, 'shop').stream, '-', '+');
    return entries.map(([, f]) => Object.fromEntries(f.flatMap((x, i) => (i % 2 === 0 ? [[x, f[i + 1]!]] : []))) as Record<string, string>);
  } finally {
    r.disconnect();
  }
}

describe('several namespaces on one table (issue 12 case 17)', () => {
  it('each namespace keeps its own triggers; install, re-install and uninstall touch only their own', async () => {
    const a = await installTriggers(schema.pool, product, { namespace: 'shop' });
    const b = await installTriggers(schema.pool, product, { namespace: 'admin' });
    expect(b.namespaces).toEqual(['admin', 'shop']);
    expect(new Set([...a.triggers, ...b.triggers]).size).toBe(a.triggers.length * 2);
    await installTriggers(schema.pool, product, { namespace: 'shop' }); // idempotent, replaces only shop's
    await schema.pool.query('UPDATE products SET price = 2 WHERE id = 1');
    expect((await outbox()).map((r) => `${r.namespace}/${r.key}`).sort()).toEqual(['admin/products:1', 'shop/products:1']);
    expect(await uninstallTriggers(schema.pool, product, { namespace: 'shop' })).toEqual(a.triggers.slice().sort());
    await schema.pool.query('DELETE FROM cachebus_outbox');
    await schema.pool.query('UPDATE products SET price = 3 WHERE id = 2');
    expect((await outbox()).map((r) => `${r.namespace}/${r.key}`)).toEqual(['admin/products:2']);
  });

  it('replaces the triggers an older version installed (cachebus_outbox_*) for the same namespace, and only those', async () => {
    // What the previous install-triggers created (one function per table, fixed trigger names).
    await schema.pool.query(`CREATE TABLE cachebus_outbox (id bigserial PRIMARY KEY, namespace text NOT NULL, key text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp());
      CREATE FUNCTION cachebus_outbox_products() RETURNS trigger LANGUAGE plpgsql AS $f$
      BEGIN
        INSERT INTO cachebus_outbox (namespace, key) SELECT 'shop', 'products:' || n."id"::text FROM cachebus_new n;
        RETURN NULL;
      END $f$;
      CREATE TRIGGER cachebus_outbox_upd AFTER UPDATE ON products
        REFERENCING OLD TABLE AS cachebus_old NEW TABLE AS cachebus_new FOR EACH STATEMENT EXECUTE FUNCTION cachebus_outbox_products();`);
    await installTriggers(schema.pool, product, { namespace: 'admin' }); // another namespace: the old one stays
    await schema.pool.query('UPDATE products SET price = 2 WHERE id = 1');
    expect((await outbox()).map((r) => `${r.namespace}/${r.key}/${r.kind}`).sort()).toEqual(['admin/products:1/k', 'shop/products:1/k']);
    await schema.pool.query('DELETE FROM cachebus_outbox');
    const shop = await installTriggers(schema.pool, product, { namespace: 'shop' }); // same namespace: replaced
    expect(shop.namespaces).toEqual(['admin', 'shop']);
    await schema.pool.query('UPDATE products SET price = 3 WHERE id = 1');
    expect((await outbox()).map((r) => `${r.namespace}/${r.key}`).sort()).toEqual(['admin/products:1', 'shop/products:1']);
    expect((await schema.pool.query("SELECT 1 FROM pg_proc WHERE proname = 'cachebus_outbox_products' AND pronamespace = $1::regnamespace", [schema.name])).rowCount).toBe(0);
  });

  it('the CLI says what is installed, per namespace, and what it removed', async () => {
    const table = `${schema.name}.products`;
    const cli = async (...args: string[]): Promise<string> => (await run('node', [CLI, 'install-triggers', '--table', table, '--database', DATABASE_URL, ...args])).stdout;
    expect(await cli('--namespace', 'shop')).toMatch(/^installed cachebus_shop_\w+_ins, .* for namespace shop\n$/);
    expect(await cli('--namespace', 'admin')).toMatch(/for namespace admin \(also watched for namespaces shop\)/);
    expect(await cli('--uninstall', '--namespace', 'admin')).toMatch(/^removed cachebus_admin_\w+_del, .*\(triggers of namespace admin\)/);
    expect(await cli('--uninstall', '--namespace', 'admin')).toMatch(/nothing removed/);
    await schema.pool.query('UPDATE products SET price = 2 WHERE id = 1');
    expect((await outbox()).map((r) => r.namespace)).toEqual(['shop']);
    const failed = await run('node', [CLI, 'install-triggers', '--table', `${schema.name}.nope`, '--namespace', 'shop', '--database', DATABASE_URL]).catch((e: { code: number; stdout: string; stderr: string }) => e);
    expect(failed).toMatchObject({ code: 1, stdout: '' });
    expect((failed as { stderr: string }).stderr).toMatch(/does not exist/);
  });
});

describe('TRUNCATE and session_replication_role (issue 12 case 18)', () => {
  it('TRUNCATE clears every cache of the namespace (its keys are unknown)', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const c = await cache();
    await c.get('products:1', () => 1);
    await c.get('unrelated', () => 2);
    const r = relay();
    await r.start();
    const received = waitForEvent<{ clear: boolean }>(c, 'received', (p) => p.clear);
    await schema.pool.query('TRUNCATE products');
    await received;
    expect([c.peek('products:1'), c.peek('unrelated')]).toEqual([undefined, undefined]);
    await until(async () => (await outbox()).length === 0, 10_000, 'outbox drained');
  });

  it('changes made with session_replication_role = replica are recorded (ENABLE ALWAYS); DISABLE TRIGGER is not', async () => {
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const client = await schema.pool.connect();
    try {
      await client.query("SET session_replication_role = replica; UPDATE products SET price = 5 WHERE id = 3; RESET session_replication_role");
    } finally {
      client.release();
    }
    expect((await outbox()).map((r) => r.key)).toEqual(['products:3']);
    // Documented limits: a disabled trigger records nothing; ENABLE TRIGGER (not ALWAYS) makes it
    // skip replica sessions again, until install-triggers is run again.
    await schema.pool.query('ALTER TABLE products DISABLE TRIGGER USER; UPDATE products SET price = 5 WHERE id = 4; ALTER TABLE products ENABLE TRIGGER USER');
    expect((await outbox()).map((r) => r.key)).toEqual(['products:3']);
    const replicaUpdate = async (id: number): Promise<void> => {
      const c = await schema.pool.connect();
      try {
        await c.query(`SET session_replication_role = replica; UPDATE products SET price = 6 WHERE id = ${id}; RESET session_replication_role`);
      } finally {
        c.release();
      }
    };
    await replicaUpdate(5);
    expect((await outbox()).map((r) => r.key)).toEqual(['products:3']);
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    await replicaUpdate(6);
    expect((await outbox()).map((r) => r.key)).toEqual(['products:3', 'products:6']);
  });
});

describe('canonical keys in the triggers (issue 12 case 12)', () => {
  it('a numeric key is recorded without trailing zeros, as the entity names it', async () => {
    await schema.pool.query("CREATE TABLE prices (id numeric PRIMARY KEY, v int NOT NULL); INSERT INTO prices VALUES (7.50, 1)");
    await installTriggers(schema.pool, { name: 'prices', columns: ['v'] }, { namespace: 'shop' });
    const c = await cache({ pg: schema.pool });
    const prices = entity(c, { name: 'prices', columns: ['v'] });
    expect(await prices.get('7.500')).toMatchObject({ v: 1 });
    expect(c.peek('prices:7.5')).toBeDefined();
    await schema.pool.query('UPDATE prices SET v = 2');
    expect((await outbox()).map((r) => r.key)).toEqual(['prices:7.5']);
    const r = relay();
    await r.start();
    await until(() => c.peek('prices:7.5') === undefined, 10_000, 'prices:7.5 dropped');
  });
});

describe('transaction(cache, { outbox }) (issue 11 case 14)', () => {
  it('kill -9 right after COMMIT, before publishing: the sidecar relay still invalidates every worker', async () => {
    await installOutbox(schema.pool);
    const b = await cache();
    await b.get('accounts:1', () => 100);
    const child: ChildProcess = fork(`${FIXTURES}tx-outbox.js`, [JSON.stringify({
      redis: REDIS_URL, prefix, namespace: 'shop', pg: schema.url, sql: 'UPDATE accounts SET balance = 0 WHERE id = 1', key: 'accounts:1',
    })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const exited = new Promise((r) => child.once('exit', r));
    cleanups.push(async () => { child.kill('SIGKILL'); await exited; });
    await waitForEvent<{ event: string }>(child, 'message', (m) => m.event === 'committed', 15_000);
    child.kill('SIGKILL');
    await exited;
    expect((await schema.pool.query('SELECT balance FROM accounts WHERE id = 1')).rows[0]).toEqual({ balance: 0 });
    expect(b.peek('accounts:1')).toBe(100); // nobody published
    expect(await outbox()).toEqual([{ namespace: 'shop', key: 'accounts:1', kind: 'k' }]);
    const r = relay();
    await r.start();
    await until(() => b.peek('accounts:1') === undefined, 10_000, 'worker b to drop accounts:1');
    await until(async () => (await outbox()).length === 0, 10_000, 'outbox drained');
  });

  it('records keys, tags and clears in the same transaction; publishes itself and deletes its rows; a rollback records nothing', async () => {
    await installOutbox(schema.pool);
    const a = await cache({ pg: schema.pool });
    await transaction(a, async (tx) => {
      await tx.query('UPDATE accounts SET balance = 1 WHERE id = 1');
      tx.invalidate('accounts:1');
      tx.invalidateTags('balances');
    }, { outbox: true });
    expect(await outbox()).toEqual([]); // published here, rows deleted
    await expect(transaction(a, async (tx) => {
      tx.invalidate('accounts:2');
      throw new Error('no');
    }, { outbox: true })).rejects.toThrow('no');
    expect(await outbox()).toEqual([]);
    // Publishing never happens (the hook throws, as a crash would stop it): the rows stay for the relay.
    await expect(transaction(a, async (tx) => {
      tx.invalidate('accounts:2');
      tx.invalidateTags('balances');
      await a.clear();
    }, { outbox: true, afterCommit: () => { throw new Error('crashed'); } })).rejects.toThrow('crashed');
    expect((await outbox()).map((r) => r.kind).sort()).toEqual(['c', 'g', 'k']);
    const b = await cache();
    await b.get('x', () => 1);
    const received = waitForEvent<{ clear: boolean; tags: number; keys: number }>(b, 'received');
    const r = relay();
    await r.start();
    expect(await received).toMatchObject({ clear: true, tags: 1, keys: 1 });
    expect(b.peek('x')).toBeUndefined();
    await expect(transaction(a, async () => undefined, { outbox: '' })).rejects.toMatchObject({ code: 'E_INVALID_OPTION' });
  });
});

describe('splitByEncodedSize', () => {
  it('sizes keys by their JSON encoding, and turns a key too large for any entry into a clear', () => {
    const q = '"'.repeat(40); // 40 bytes raw, 82 encoded
    const { parts, oversized } = splitByEncodedSize({ keys: [q, q + 'a', q + 'b'], tags: [], clear: false }, 200);
    expect(parts.map((p) => p.keys.length)).toEqual([2, 1]);
    for (const p of parts) expect(Buffer.byteLength(JSON.stringify(p.keys))).toBeLessThanOrEqual(200);
    expect(oversized).toBe(0);
    const big = splitByEncodedSize({ keys: ['ok', '\\'.repeat(150)], tags: ['t'], clear: false }, 200);
    expect(big).toEqual({ parts: [{ keys: ['ok'], tags: ['t'], clear: true }], oversized: 1 });
  });
});
