import { createRequire } from 'node:module';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { entity, transaction } from '../worker-runtime/postgres/index.js';
import { TestSchema } from './helpers/pg.js';
import { PgProxy } from './helpers/pg-proxy.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';

let prefix: string;
let schema: TestSchema;
const cleanups: (() => Promise<unknown>)[] = [];

async function make(extra: Record<string, unknown> = {}): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 1000, ...extra });
  cleanups.push(() => c.close());
  return c;
}

const balance = async (id: number): Promise<number> =>
  (await schema.pool.query<{ balance: number }>('SELECT balance FROM accounts WHERE id = $1', [id])).rows[0]!.balance;

/** Terminates a backend and resolves once `client` has seen its connection end. */
async function terminate(pid: number, client: pg.ClientBase): Promise<void> {
  const ended = new Promise((r) => client.once('end', r));
  await schema.pool.query('SELECT pg_terminate_backend($1)', [pid]);
  await ended;
}

/** Uncaught exceptions while the test runs (an 'error' event with no listener ends up here). */
function watchCrashes(): Error[] {
  const seen: Error[] = [];
  const on = (err: Error): void => { seen.push(err); };
  process.on('uncaughtException', on);
  cleanups.push(async () => { process.off('uncaughtException', on); });
  return seen;
}

/** A second, independent copy of the `pg` module (as with two versions in node_modules). */
function otherPg(): typeof pg {
  const require = createRequire(import.meta.url);
  const dir = require.resolve('pg').replace(/lib[/\\]index\.js$/, '');
  const saved = Object.keys(require.cache).filter((k) => k.startsWith(dir));
  const kept = saved.map((k) => [k, require.cache[k]] as const);
  for (const k of saved) delete require.cache[k];
  try {
    return require('pg') as typeof pg;
  } finally {
    for (const [k, m] of kept) require.cache[k] = m;
  }
}

beforeEach(async () => {
  prefix = randomPrefix();
  schema = await TestSchema.create();
  await schema.pool.query(`
    CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
    INSERT INTO accounts VALUES (1, 100), (2, 200);`);
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  await schema.drop();
  await cleanupPrefix(prefix);
});

describe('ambiguous COMMIT (issue 12 case 13)', () => {
  it('connection lost after COMMIT was sent: the invalidation is published, and the caller learns the outcome is unknown', async () => {
    const proxy = await PgProxy.start();
    cleanups.push(() => proxy.close());
    const pool = new pg.Pool({ connectionString: proxy.urlFor(schema.url), max: 2 });
    pool.on('error', () => undefined);
    cleanups.push(() => pool.end());
    const a = await make();
    const b = await make();
    await b.get('accounts:1', () => 100);
    const sent = proxy.loseRepliesAfter(/COMMIT/);
    const tx = transaction(a, pool, async (t) => {
      await t.query('UPDATE accounts SET balance = 0 WHERE id = 1');
      t.invalidate('accounts:1');
    });
    tx.catch(() => undefined);
    await sent;
    await until(async () => (await balance(1)) === 0, 10_000, 'Postgres to commit'); // it did commit
    proxy.cut(); // ...but the client never hears it
    await expect(tx).rejects.toMatchObject({ code: 'E_TX_OUTCOME_UNKNOWN' });
    await until(() => b.peek('accounts:1') === undefined, 10_000, 'worker b to drop accounts:1');
  });

  it('a COMMIT Postgres answers with an error (deferred constraint) still publishes nothing', async () => {
    await schema.pool.query(`CREATE TABLE parents (id int PRIMARY KEY);
      CREATE TABLE children (id int PRIMARY KEY, parent_id int REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);`);
    const a = await make();
    const published: unknown[] = [];
    a.on('published', (p) => published.push(p));
    await expect(transaction(a, schema.pool, async (t) => {
      await t.query('INSERT INTO children VALUES (1, 42)');
      t.invalidate('children:1');
    })).rejects.toMatchObject({ code: '23503' });
    expect(published).toEqual([]);
  });
});

describe('terminated backends never crash the process (issue 12 case 14)', () => {
  it('cache.transaction: backend killed while the transaction is idle between statements', async () => {
    const crashes = watchCrashes();
    const a = await make();
    await expect(transaction(a, schema.pool, async (t) => {
      await t.query('UPDATE accounts SET balance = 1 WHERE id = 1');
      const pid = (await t.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await terminate(pid, t.client); // the client emits 'error' with no query running
      await t.query('UPDATE accounts SET balance = 2 WHERE id = 2');
    })).rejects.toThrow();
    expect(await balance(1)).toBe(100);
    // The pool is still usable, and the broken client was not handed out again.
    await transaction(a, schema.pool, async (t) => { await t.query('UPDATE accounts SET balance = 3 WHERE id = 2'); });
    expect(await balance(2)).toBe(3);
    expect(crashes).toEqual([]);
  });

  it('entity.update: backend killed while its UPDATE waits for a row lock', async () => {
    const crashes = watchCrashes();
    const a = await make({ pg: schema.pool });
    const accounts = entity(a, { name: 'accounts', columns: ['balance'] });
    const locker = await schema.pool.connect();
    cleanups.push(async () => locker.release());
    await locker.query('BEGIN; SELECT * FROM accounts WHERE id = 1 FOR UPDATE');
    const lockerPid = (await locker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const update = accounts.update(1, { balance: 5 });
    update.catch(() => undefined);
    const pid = await until(async () => (await schema.pool.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) AND query LIKE 'UPDATE "accounts"%'`, [lockerPid])).rows[0]?.pid,
      10_000, 'the UPDATE to wait for the row lock');
    await schema.pool.query('SELECT pg_terminate_backend($1)', [pid]);
    await expect(update).rejects.toThrow();
    await locker.query('ROLLBACK');
    // Still alive and working.
    expect(await accounts.update(2, { balance: 6 })).toMatchObject({ id: 2, balance: 6 });
    expect(crashes).toEqual([]);
  });
});

describe('a pg.Pool from another copy of pg (issue 12 case 15)', () => {
  it('is used as a pool: one connection per transaction, and a failed transaction debits nothing', async () => {
    const pg2 = otherPg();
    expect(pg2.Pool).not.toBe(pg.Pool);
    const foreign = new pg2.Pool({ connectionString: schema.url, max: 2 });
    expect(foreign instanceof pg.Pool).toBe(false);
    cleanups.push(() => foreign.end());
    const a = await make({ pg: foreign });
    await expect(transaction(a, foreign, async (t) => {
      // Take one of the pool's two connections for something else meanwhile (contention): the
      // transaction's statements must stay on the transaction's own connection.
      const other = await foreign.connect();
      try {
        await t.query('UPDATE accounts SET balance = balance - 10 WHERE id = 1');
        const pids = new Set<number>();
        for (let i = 0; i < 3; i++) pids.add((await t.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
        expect(pids.size).toBe(1);
      } finally {
        other.release();
      }
      throw new Error('rolled back on purpose');
    })).rejects.toThrow('rolled back on purpose');
    expect(await balance(1)).toBe(100);
    // The cache's own pool option (entities, transaction(cache, fn)) recognises it too.
    const accounts = entity(a, { name: 'accounts', columns: ['balance'] });
    expect(await accounts.get(2)).toMatchObject({ balance: 200 });
    const received = waitForEvent(a, 'published');
    await transaction(a, async (t) => { await t.query('UPDATE accounts SET balance = 7 WHERE id = 2'); t.invalidate('accounts:2'); });
    await received;
    expect(await balance(2)).toBe(7);
  });
});
