/**
 * Issue 12, cases 6-9 and 11: foreign keys, mixed modes, dead-letter retry and bounds, outage
 * backoff, and every worker converging to what Postgres holds. Real Redis and Postgres.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WriteModeError } from '../bus/errors.js';
import { busKeys, writeBehindKeys, writeBehindShared } from '../bus/keys.js';
import { Flusher } from '../bus/write-behind/flusher.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { entity } from '../worker-runtime/postgres/index.js';
import { writeBehind, type WriteBehindEntity } from '../worker-runtime/write-behind/write-behind.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until } from './helpers/wait.js';
import { createItems, ITEMS, itemsById } from './fixtures/wb-db.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli/cachebus.js', import.meta.url));
const NS = 'wb';
let prefix: string;
let schema: TestSchema;
let redis: Redis;
let cleanups: (() => Promise<unknown>)[];

beforeEach(async () => {
  prefix = randomPrefix();
  schema = await TestSchema.create();
  await createItems(schema);
  redis = new Redis(REDIS_URL);
  cleanups = [];
});
afterEach(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  redis.disconnect();
  await cleanupPrefix(prefix);
  await schema.drop();
});

async function newCache(): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: NS, prefix, maxEntries: 10_000 });
  cleanups.push(() => c.close());
  return c;
}
async function newWb(cache: Cache<{}>, def: Parameters<typeof writeBehind>[1] = ITEMS, opts: Parameters<typeof writeBehind>[2] = {}): Promise<WriteBehindEntity> {
  const e = await writeBehind(cache, def, { pg: schema.url, flushDelayMs: 0, ...opts });
  cleanups.push(() => e.close());
  return e;
}
async function newFlusher(opts: Partial<Parameters<typeof Flusher.open>[0]> = {}): Promise<Flusher> {
  const f = await Flusher.open({ redis: REDIS_URL, namespace: NS, prefix, pg: schema.url, sweepIntervalMs: 50, leaseMs: 2000, ...opts });
  f.on('error', () => undefined);
  cleanups.push(() => f.close());
  return f;
}
const keysOf = (entity = 'items'): ReturnType<typeof writeBehindKeys> => writeBehindKeys(busKeys(prefix, NS), entity);
const shared = (): ReturnType<typeof writeBehindShared> => writeBehindShared(busKeys(prefix, NS));
const drained = (entity = 'items'): Promise<unknown> => until(async () => {
  const k = keysOf(entity);
  return (await redis.hlen(k.overlay)) === 0 && (await redis.zcard(k.dirty)) === 0 && (await redis.zcard(k.claims)) === 0;
}, 20_000, `the ${entity} overlay to drain`);
const pgLoader = (id: number) => async (): Promise<{}> => (await schema.pool.query('SELECT id, version, val, n FROM items WHERE id = $1', [id])).rows[0];

describe('write-behind coherence (issue 12)', () => {
  it('case 6: a child whose parent is itself pending waits for it (no dead letter); drains go parents first', async () => {
    await schema.pool.query(`CREATE TABLE parents (id int PRIMARY KEY, version bigint NOT NULL, name text);
      CREATE TABLE children (id int PRIMARY KEY, version bigint NOT NULL, parent_id int NOT NULL REFERENCES parents (id));`);
    const cache = await newCache();
    const parents = await newWb(cache, { name: 'parents', version: 'version', columns: ['name'] });
    const children = await newWb(cache, { name: 'children', version: 'version', columns: ['parent_id'] });
    const flusher = await newFlusher({ sweepIntervalMs: 60_000, queueConcurrency: 0, retryBaseMs: 20 });
    // The sweep the flusher starts on open must be over before the writes (drainAll waits for it):
    // were it still running, it could flush the parents first and leave no child to defer (seen in CI).
    await flusher.drainAll();
    for (let i = 1; i <= 200; i++) {
      await parents.write({ id: i, name: `p${i}` });
      await children.write({ id: i, parent_id: i });
    }
    await flusher.drain('children'); // children first, on purpose: every parent is still pending
    expect(flusher.stats.deadLetters).toBe(0);
    expect(flusher.stats.rowsDeferred).toBeGreaterThan(0);
    await until(async () => { await flusher.drainAll(); return (await schema.pool.query('SELECT count(*)::int AS n FROM children')).rows[0].n === 200; }, 20_000, 'every child');
    expect(await redis.llen(shared().dead)).toBe(0);
    // drainAll orders by the catalogue's foreign keys: parents before children, nothing deferred.
    const deferred = flusher.stats.rowsDeferred;
    for (let i = 201; i <= 300; i++) {
      await children.write({ id: i, parent_id: i });
      await parents.write({ id: i, name: `p${i}` });
    }
    await flusher.drainAll();
    expect(flusher.stats.rowsDeferred).toBe(deferred);
    expect((await schema.pool.query('SELECT count(*)::int AS n FROM children')).rows[0].n).toBe(300);
    // A parent that is not pending anywhere: the child is a dead letter (23503), as before.
    await children.write({ id: 999, parent_id: 12345 });
    await flusher.drainAll();
    expect(flusher.stats.deadLetters).toBe(1);
  });

  it('case 7: write-through writes of a write-behind entity are refused (any cache of the namespace); a NULL stored version is older than any write', async () => {
    const cache = await newCache();
    const handle = entity(cache, ITEMS);
    await writeBehind(cache, handle, { pg: schema.url, flushDelayMs: 0 });
    await handle.upsert({ id: 1, val: 'behind', n: 1 }, { mode: 'write-behind' });
    await expect(handle.update(1, { val: 'through' })).rejects.toBeInstanceOf(WriteModeError);
    await expect(handle.delete(1)).rejects.toBeInstanceOf(WriteModeError);
    await expect(handle.upsert({ id: 1, val: 'through', n: 2 })).rejects.toBeInstanceOf(WriteModeError);
    const other = await newCache(); // never called writeBehind(): knows the entity from Redis
    await expect(entity(other, ITEMS).update(1, { val: 'through' })).rejects.toBeInstanceOf(WriteModeError);

    await schema.pool.query('ALTER TABLE items ALTER COLUMN version DROP NOT NULL; ALTER TABLE applied ALTER COLUMN version DROP NOT NULL');
    await schema.pool.query(`INSERT INTO items (id, version, val, n) VALUES (2, NULL, 'legacy', 0)`);
    await handle.upsert({ id: 2, val: 'new', n: 2 }, { mode: 'write-behind' });
    const flusher = await newFlusher();
    await drained();
    expect((await itemsById(schema.pool, schema.name)).get(2)?.val).toBe('new');
    expect(flusher.stats.rowsStale).toBe(0);
  });

  it('case 8: dead-letters --retry never resurrects an older row, and tells every cache about what it requeues', async () => {
    await schema.pool.query('ALTER TABLE items ADD CONSTRAINT n_positive CHECK (n >= 0)');
    const cache = await newCache();
    const items = await newWb(cache);
    const flusher = await newFlusher();
    await items.write({ id: 1, val: 'refused', n: -1 });
    await items.write({ id: 2, val: 'refused too', n: -2 });
    await until(() => flusher.stats.deadLetters === 2, 10_000, 'two dead letters');
    const v = (await items.write({ id: 1, val: 'newer', n: 5 })).version;
    await drained();
    await flusher.close();
    await schema.pool.query('ALTER TABLE items DROP CONSTRAINT n_positive'); // the cause is fixed
    const before = (await redis.xrevrange(busKeys(prefix, NS).stream, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';
    const out = await run('node', [CLI, 'dead-letters', '--namespace', NS, '--prefix', prefix, '--redis', REDIS_URL, '--pg', schema.url, '--retry', '--json']);
    expect(JSON.parse(out.stdout)).toEqual({ requeued: 1, superseded: 1, skipped: 0 });
    expect(await items.pending(1)).toBeUndefined(); // the older row never became visible again
    expect(await items.pending(2)).toMatchObject({ val: 'refused too' });
    const after = await redis.xrange(busKeys(prefix, NS).stream, `(${before}`, '+');
    expect(after.some(([, f]) => f.join(' ').includes('items:2'))).toBe(true);
    await newFlusher();
    await drained();
    const db = await itemsById(schema.pool, schema.name);
    expect(db.get(1)).toMatchObject({ val: 'newer', version: v });
    expect(db.get(2)).toMatchObject({ val: 'refused too', n: -2 });
  });

  it('case 9: dead letters are bounded and the overflow counted', async () => {
    await schema.pool.query('ALTER TABLE items ADD CONSTRAINT n_positive CHECK (n >= 0)');
    const cache = await newCache();
    const items = await newWb(cache);
    const flusher = await newFlusher({ maxDeadLetters: 5 });
    for (let i = 1; i <= 20; i++) await items.write({ id: i, val: 'bad', n: -i });
    await drained();
    expect(flusher.stats.deadLetters).toBe(20);
    expect(await redis.llen(shared().dead)).toBe(5);
    expect(flusher.stats.deadLettersDropped).toBe(15);
    expect(await redis.get(shared().deadDropped)).toBe('15');
    const kept = (await redis.lrange(shared().dead, 0, -1)).map((r) => JSON.parse(r).id);
    expect(kept).toEqual(['16', '17', '18', '19', '20']); // the newest are kept
  });

  it('case 9: during a Postgres outage, drains honour the backoff (no retry storm)', async () => {
    const cache = await newCache();
    const items = await newWb(cache, ITEMS, { flushDelayMs: 10 });
    const flusher = await newFlusher({ pg: 'postgres://postgres@127.0.0.1:1/test', sweepIntervalMs: 20, retryBaseMs: 100, retryMaxMs: 1000 });
    let attempts = 0;
    flusher.on('retry', () => { attempts++; });
    const end = Date.now() + 3000;
    let n = 0;
    while (Date.now() < end) {
      await items.write({ id: n % 50, val: 'x', n });
      n++;
      await new Promise((r) => setTimeout(r, 5)); // a tick job every flush slot, sweeps every 20 ms
    }
    // 100, 200, 400, 800, 1000 ms (x 0.5-1 jitter): at most ~12 attempts in 3 s.
    expect(attempts).toBeGreaterThan(1);
    expect(attempts).toBeLessThanOrEqual(15);
  });

  it('case 11: a cache that never called writeBehind() reads pending rows, and a flush invalidates what it wrote', async () => {
    await schema.pool.query(`INSERT INTO items (id, version, val, n) VALUES (1, 1, 'old', 0), (2, 1, 'old', 0)`);
    const early = await newCache(); // opened before the entity was registered as write-behind
    expect(await early.get('items:1', pgLoader(1))).toMatchObject({ val: 'old' });
    const writer = await newCache();
    const items = await newWb(writer, ITEMS, { flushDelayMs: 60_000 }); // the window stays open
    await items.write({ id: 1, val: 'new', n: 1 });
    await items.write({ id: 2, val: 'new', n: 2 });
    const late = await newCache(); // never calls writeBehind()
    expect(await late.get('items:2', pgLoader(2))).toMatchObject({ val: 'new' }); // the overlay, not Postgres
    await until(() => early.peek('items:1') === undefined, 5_000, 'the write to invalidate the early cache');
    expect(await early.get('items:1', pgLoader(1))).toMatchObject({ val: 'new' }); // the overlay, at once
    // Flush: every cache that cached the old Postgres row is told to drop it.
    const stale = await newCache();
    stale.setMissHook(undefined); // a reader that did not see the overlay (e.g. before it learned the entity)
    expect(await stale.get('items:2', pgLoader(2))).toMatchObject({ val: 'old' });
    const flusher = await newFlusher();
    await redis.zadd(keysOf().dirty, 0, '1', 0, '2'); // due now
    await flusher.drainAll();
    await drained();
    await until(async () => ((await stale.get('items:2', pgLoader(2))) as { val: string }).val === 'new', 5_000, 'the flush to invalidate the stale copy');
  });

  it('case 12: write-behind keys are canonical by the key column type: \'007\' and 7 are one row, one cache key, everywhere', async () => {
    const cache = await newCache();
    const other = await newCache();
    const wb = await newWb(cache);
    await wb.write({ id: '007', val: 'v1', n: 1 } as never);
    expect(await wb.get('7')).toMatchObject({ val: 'v1' });
    expect(await wb.pending(7)).toMatchObject({ val: 'v1' });
    expect(await other.get('items:7', async () => undefined)).toMatchObject({ val: 'v1' }); // the overlay, under the canonical key
    const flusher = await newFlusher();
    await flusher.drainAll();
    await drained();
    expect((await schema.pool.query('SELECT val FROM items WHERE id = 7')).rows[0]).toEqual({ val: 'v1' });
    await wb.write({ id: 7, val: 'v2', n: 2 } as never);
    await until(async () => ((await other.get('items:7', async () => undefined)) as { val?: string } | undefined)?.val === 'v2', 5_000, 'the other cache to see v2');
    await expect(wb.get('seven')).rejects.toMatchObject({ code: 'E_INVALID_VALUE' });
  });
});
