import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { busKeys } from '../bus/keys.js';
import { createCache, type Cache, errors } from '../worker-runtime/index.js';
import { transaction } from '../worker-runtime/postgres/index.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { waitForEvent } from './helpers/wait.js';

let prefix: string;
let schema: TestSchema;
let raw: Redis;
const caches: Cache<{}>[] = [];

async function make(): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 1000, pg: schema.pool });
  caches.push(c);
  return c;
}

const streamLength = (): Promise<number> => raw.xlen(busKeys(prefix, 'shop').stream);
const balance = async (id: number): Promise<number> =>
  (await schema.pool.query<{ balance: number }>('SELECT balance FROM accounts WHERE id = $1', [id])).rows[0]!.balance;

beforeEach(async () => {
  prefix = randomPrefix();
  raw = new Redis(REDIS_URL);
  schema = await TestSchema.create();
  await schema.pool.query(`
    CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
    INSERT INTO accounts VALUES (1, 100), (2, 200);
    CREATE TABLE parents (id int PRIMARY KEY);
    CREATE TABLE children (id int PRIMARY KEY, parent_id int REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);`);
});

afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  await schema.drop();
  raw.disconnect();
  await cleanupPrefix(prefix);
});

describe('cache.transaction', () => {
  it('publishes the held invalidations as one entry only after COMMIT succeeds', async () => {
    const a = await make();
    const b = await make();
    await b.get('accounts:1', () => 100);
    await b.get('accounts:2', () => 200);
    const published: { ids: string[]; keys: number }[] = [];
    a.on('published', (p) => published.push(p));
    const before = await streamLength();
    const received = waitForEvent<{ keys: number }>(b, 'received');
    const result = await transaction(a, schema.pool, async (tx) => {
      await tx.query('UPDATE accounts SET balance = balance - 10 WHERE id = 1');
      tx.invalidate('accounts:1');
      await tx.query('UPDATE accounts SET balance = balance + 10 WHERE id = 2');
      await a.invalidate('accounts:2'); // through the cache, in the transaction's async context
      // Nothing is out yet: not committed.
      expect(await streamLength()).toBe(before);
      expect(b.peek('accounts:1')).toBe(100);
      expect(await balance(1)).toBe(100); // another connection still sees the committed row
      return 'ok';
    });
    expect(result).toBe('ok');
    expect(await received).toMatchObject({ keys: 2 });
    expect(published).toEqual([expect.objectContaining({ keys: 2, ids: [expect.any(String)] })]);
    expect((await streamLength()) - before).toBe(1);
    expect([b.peek('accounts:1'), b.peek('accounts:2')]).toEqual([undefined, undefined]);
    expect(await balance(1)).toBe(90);
  });

  it('a thrown error rolls back, publishes nothing, and drops the touched keys locally', async () => {
    const a = await make();
    const b = await make();
    await a.get('accounts:1', () => 100);
    await b.get('accounts:1', () => 100);
    const before = await streamLength();
    await expect(transaction(a, schema.pool, async (tx) => {
      await tx.query('UPDATE accounts SET balance = 0 WHERE id = 1');
      await a.set('accounts:1', 0); // private to the transaction
      expect(a.peek('accounts:1')).toBe(100); // the shared cache keeps the committed value
      expect(await tx.get('accounts:1', () => -1)).toBe(0); // the transaction reads its own write
      throw new Error('abort');
    })).rejects.toThrow('abort');
    expect(await balance(1)).toBe(100);
    expect(a.peek('accounts:1')).toBeUndefined();
    expect(b.peek('accounts:1')).toBe(100);
    expect(await streamLength()).toBe(before);
  });

  it('tx.rollback() rolls back and publishes nothing', async () => {
    const a = await make();
    const before = await streamLength();
    const r = await transaction(a, schema.pool, async (tx) => {
      await tx.query('UPDATE accounts SET balance = 0 WHERE id = 1');
      tx.invalidate('accounts:1');
      tx.rollback();
      return 42;
    });
    expect(r).toBe(42);
    expect(await balance(1)).toBe(100);
    expect(await streamLength()).toBe(before);
  });

  it('a COMMIT that fails (deferred constraint) publishes nothing', async () => {
    const a = await make();
    const b = await make();
    await b.get('children:1', () => 'old');
    const before = await streamLength();
    const err = await transaction(a, schema.pool, async (tx) => {
      await tx.query('INSERT INTO children VALUES (1, 999)'); // checked only at COMMIT
      tx.invalidate('children:1');
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: '23503' });
    expect(await streamLength()).toBe(before);
    expect(b.peek('children:1')).toBe('old');
    expect((await schema.pool.query('SELECT count(*)::int AS n FROM children')).rows[0].n).toBe(0);
  });

  it('a COMMIT that reports ROLLBACK (a caught statement error) throws E_TX_ROLLED_BACK and publishes nothing', async () => {
    const a = await make();
    const before = await streamLength();
    const err = await transaction(a, schema.pool, async (tx) => {
      tx.invalidate('accounts:1');
      await tx.query('SELECT 1/0').catch(() => undefined); // swallowed: the transaction is aborted
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(errors.TransactionRolledBackError);
    expect(err).toMatchObject({ code: 'E_TX_ROLLED_BACK' });
    expect(await streamLength()).toBe(before);
  });

  it('a value read inside that depends on uncommitted data never reaches the shared cache', async () => {
    const a = await make();
    type Q = { query(text: string): Promise<{ rows: { balance: number }[] }> };
    const load = (q: Q) => async () => (await q.query('SELECT balance FROM accounts WHERE id = 1')).rows[0]!.balance;
    let outside: unknown;
    await transaction(a, schema.pool, async (tx) => {
      await tx.query('UPDATE accounts SET balance = 5 WHERE id = 1');
      expect(await a.get('accounts:1', load(tx))).toBe(5); // routed to the transaction's private view
      expect(a.peek('accounts:1')).toBeUndefined();
      outside = await new Promise((resolve) => setImmediate(() => resolve(undefined))); // a turn passes
      tx.rollback();
    });
    expect(outside).toBeUndefined();
    expect(a.peek('accounts:1')).toBeUndefined();
    expect(await a.get('accounts:1', load(schema.pool))).toBe(100);
  });

  it('concurrent transactions do not leak into each other', async () => {
    const a = await make();
    const b = await make();
    await a.get('accounts:1', () => 100);
    await b.get('accounts:2', () => 200);
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    let entered!: () => void;
    const inTx1 = new Promise<void>((r) => { entered = r; });
    const tx1 = transaction(a, schema.pool, async (tx) => {
      await tx.query('UPDATE accounts SET balance = 1 WHERE id = 1');
      tx.set('accounts:1', 1);
      entered();
      await held;
      throw new Error('tx1 aborts');
    });
    await inTx1;
    const published: { keys: number }[] = [];
    a.on('published', (p) => published.push(p));
    const seen = await transaction(a, schema.pool, async (tx) => {
      await tx.query('UPDATE accounts SET balance = 2 WHERE id = 2');
      tx.invalidate('accounts:2');
      return tx.get('accounts:1', async () => 'loaded');
    });
    expect(seen).toBe(100); // tx2 sees the shared committed value, not tx1's private 1
    expect(published).toEqual([expect.objectContaining({ keys: 1 })]); // only tx2's key
    release();
    await expect(tx1).rejects.toThrow('tx1 aborts');
    expect(published).toHaveLength(1);
    expect(await balance(1)).toBe(100);
    expect(await balance(2)).toBe(2);
  });

  it('I1 across COMMIT: a load that read the old row and finishes after COMMIT is not stored', async () => {
    const a = await make();
    let release!: (v: number) => void;
    const gate = new Promise<number>((r) => { release = r; });
    const oldLoad = a.get('accounts:1', () => gate); // outside the transaction, read before COMMIT
    await transaction(a, schema.pool, async (tx) => {
      await tx.query('UPDATE accounts SET balance = 7 WHERE id = 1');
      tx.invalidate('accounts:1');
    });
    release(100);
    expect(await oldLoad).toBe(100);
    expect(a.peek('accounts:1')).toBeUndefined();
  });

  it('dependents of what the transaction changed are read fresh inside it and dropped at COMMIT', async () => {
    const a = await make();
    const b = await make();
    for (const c of [a, b]) {
      await c.get('accounts:1', () => 100);
      await c.get('report:total', () => 300, { dependsOn: ['accounts:1', 'accounts:2'] });
    }
    const received = waitForEvent<{ dropped: number }>(b, 'received');
    await transaction(a, async (tx) => { // on options.pg
      await tx.query('UPDATE accounts SET balance = 0 WHERE id = 1');
      tx.invalidate('accounts:1');
      expect(await tx.get('report:total', async () => 200)).toBe(200); // not the shared 300
    });
    expect((await received).dropped).toBe(2);
    expect(a.peek('report:total')).toBeUndefined();
  });

  it('a batch inside a transaction joins it: still nothing before COMMIT', async () => {
    const a = await make();
    const published: { keys: number }[] = [];
    a.on('published', (p) => published.push(p));
    await transaction(a, schema.pool, async () => {
      await a.batch(async () => {
        await a.invalidate('x:1');
        await a.invalidate('x:2');
      });
      expect(published).toEqual([]);
    });
    expect(published).toEqual([expect.objectContaining({ keys: 2 })]);
  });
});
