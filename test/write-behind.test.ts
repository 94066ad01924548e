import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defineEntity } from '../bus/entities.js';
import { BackpressureError, InvalidOptionError, InvalidValueError, UnknownEntityError } from '../bus/errors.js';
import { busKeys, writeBehindKeys, writeBehindShared } from '../bus/keys.js';
import { ackScript } from '../bus/write-behind/lua-ack.js';
import { claimScript } from '../bus/write-behind/lua-claim.js';
import { checkDurability, DURABILITY_WARNING, warnIfNotDurable } from '../bus/write-behind/durability.js';
import { Flusher } from '../bus/write-behind/flusher.js';
import { kSplitAbove } from '../bus/write-behind/writer.js';
import { makeUpsert, UPSERT_METHODS } from '../bus/write-behind/upsert.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { entity, transaction } from '../worker-runtime/postgres/index.js';
import { writeBehind, type WriteBehindEntity } from '../worker-runtime/write-behind/write-behind.js';
import type { Row } from '../worker-runtime/postgres/entity.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL, TestRedis } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';
import { createItems, doubleApplied, ITEMS, itemsById } from './fixtures/wb-db.js';
import { WbProc } from './fixtures/wb-proc.js';

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
async function newItems(cache: Cache<{}>, opts: Parameters<typeof writeBehind>[2] = {}): Promise<WriteBehindEntity> {
  const e = await writeBehind(cache, ITEMS, { pg: schema.url, ...opts });
  cleanups.push(() => e.close());
  return e;
}
async function newFlusher(opts: Partial<Parameters<typeof Flusher.open>[0]> = {}): Promise<Flusher> {
  const f = await Flusher.open({ redis: REDIS_URL, namespace: NS, prefix, pg: schema.url, sweepIntervalMs: 50, leaseMs: 2000, ...opts });
  cleanups.push(() => f.close());
  return f;
}
const wbKeys = (): ReturnType<typeof writeBehindKeys> => writeBehindKeys(busKeys(prefix, NS), 'items');
const drained = (): Promise<unknown> => until(async () => (await redis.hlen(wbKeys().overlay)) === 0 && (await redis.zcard(wbKeys().dirty)) === 0 && (await redis.zcard(wbKeys().claims)) === 0, 20_000, 'the overlay to drain');

describe('write-behind', () => {
  it('warns once at start-up when Redis runs without AOF or with an evicting policy', async () => {
    const weak = await TestRedis.start(['--maxmemory-policy', 'allkeys-lru']);
    const strong = await TestRedis.start(['--appendonly', 'yes', '--maxmemory-policy', 'noeviction']);
    const a = new Redis(weak.url);
    const b = new Redis(strong.url);
    cleanups.push(async () => { a.disconnect(); b.disconnect(); await weak.dispose(); await strong.dispose(); });
    expect(await checkDurability(a)).toEqual({ eviction: 'allkeys-lru', aofOff: true });
    expect(await checkDurability(b)).toEqual({});
    const warned = waitForEvent<Error & { code?: string }>(process, 'warning', (w) => w.code === DURABILITY_WARNING, 5000);
    await warnIfNotDurable(a);
    expect((await warned).message).toMatch(/maxmemory-policy is allkeys-lru.*AOF is off/);
  });

  it('acknowledges a write once durable in Redis, serves it at once, flushes it later with its version', async () => {
    const cache = await newCache();
    const items = await newItems(cache, { flushDelayMs: 20 });
    const r = await items.write({ id: 1, val: 'a', n: 1 });
    expect(r.version).toMatch(/^\d+$/);
    expect(cache.peek('items:1')).toEqual({ id: 1, val: 'a', n: 1, version: r.version });
    expect(await items.pending(1)).toEqual({ id: 1, val: 'a', n: 1, version: r.version });
    expect((await itemsById(schema.pool, schema.name)).size).toBe(0); // no flusher yet: only Redis has it
    await newFlusher();
    await drained();
    expect((await itemsById(schema.pool, schema.name)).get(1)).toEqual({ id: 1, version: r.version, val: 'a', n: 1 });
    expect(await items.pending(1)).toBeUndefined();
  });

  it(`a tick of more than ${kSplitAbove} writes goes in two script calls, sent back to back; a row written twice in it keeps the later write`, async () => {
    const cache = await newCache();
    const items = await newItems(cache, { flushDelayMs: 60_000 });
    const small = await Promise.all(Array.from({ length: kSplitAbove }, (_, i) => items.write({ id: 100 + i, val: 's', n: i })));
    expect(items.stats.scripts).toBe(1);
    // 64 writes in one tick; row 1 is written first and last, so the two land in different calls.
    const rows = Array.from({ length: 64 }, (_, i) => ({ id: i === 63 ? 1 : i + 1, val: i === 63 ? 'last' : `v${i}`, n: i }));
    const acks = await Promise.all(rows.map((r) => items.write(r)));
    expect(items.stats.scripts).toBe(3);
    expect(BigInt(acks[63]!.version)).toBeGreaterThan(BigInt(acks[0]!.version));
    expect(await items.pending(1)).toEqual({ id: 1, val: 'last', n: 63, version: acks[63]!.version });
    for (let i = 1; i < 63; i++) expect((await items.pending(i + 1))?.val).toBe(`v${i}`);
    expect(small.every((a) => /^\d+$/.test(a.version))).toBe(true);
    expect(items.stats.writes).toBe(kSplitAbove + 64);
  });

  it('refuses bad rows up front with typed errors', async () => {
    const cache = await newCache();
    const items = await newItems(cache);
    await expect(items.write({ val: 'no id' })).rejects.toBeInstanceOf(InvalidValueError);
    await expect(items.write({ id: 1, price: 3 })).rejects.toBeInstanceOf(UnknownEntityError);
    await expect(items.write({ id: 1, big: 1n } as never)).rejects.toBeInstanceOf(UnknownEntityError);
    await expect(items.write({ id: 1, val: () => 1 } as never)).rejects.toBeInstanceOf(InvalidValueError);
    await expect(writeBehind(cache, { name: 'nover', columns: ['a'] })).rejects.toBeInstanceOf(InvalidOptionError);
  });

  it('coalesces ten writes to one key into one upsert of the last version', async () => {
    const cache = await newCache();
    const items = await newItems(cache, { flushDelayMs: 0 });
    const versions: string[] = [];
    for (let n = 0; n < 10; n++) versions.push((await items.write({ id: 7, val: `v${n}`, n })).version);
    expect(versions.map(BigInt)).toEqual([...versions.map(BigInt)].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
    const f = await newFlusher();
    await drained();
    const applied = await schema.pool.query(`SELECT id, version FROM ${schema.name}.applied`);
    expect(applied.rows).toEqual([{ id: 7, version: versions[9] }]);
    expect((await itemsById(schema.pool, schema.name)).get(7)).toEqual({ id: 7, version: versions[9], val: 'v9', n: 9 });
    expect(f.stats.rowsFlushed).toBe(1);
  });

  it('never lets an older version overwrite a newer one, with every upsert method', async () => {
    const cache = await newCache();
    const items = await newItems(cache, { flushDelayMs: 0 });
    const v = BigInt((await items.write({ id: 3, val: 'new', n: 2 })).version);
    await newFlusher();
    await drained();
    const entity = defineEntity(ITEMS);
    for (const method of UPSERT_METHODS) {
      const upsert = makeUpsert(entity, method);
      // A replayed (older) batch and the same version again change nothing...
      expect(await upsert(schema.pool, [{ id: '3', version: String(v - 5n), json: '{"id":3,"val":"old","n":1}' }]), method).toBe(0);
      expect(await upsert(schema.pool, [{ id: '3', version: String(v), json: '{"id":3,"val":"same","n":1}' }]), method).toBe(0);
      // ...while a newer row and a new key are applied.
      const rows = [
        { id: '3', version: String(v + 1n), json: `{"id":3,"val":"${method}","n":3}` },
        { id: '4', version: '1', json: `{"id":4,"val":"tab\\tnew\\nline \\\\ ${method}","n":null}` },
      ];
      expect(await upsert(schema.pool, rows), method).toBe(2);
      const db = await itemsById(schema.pool, schema.name);
      expect(db.get(3), method).toEqual({ id: 3, version: String(v + 1n), val: method, n: 3 });
      expect(db.get(4), method).toEqual({ id: 4, version: '1', val: `tab\tnew\nline \\ ${method}`, n: null });
      await schema.pool.query(`DELETE FROM ${schema.name}.items WHERE id = 4`);
      await schema.pool.query(`UPDATE ${schema.name}.items SET version = $1 WHERE id = 3`, [String(v)]);
    }
  });

  it('keeps a row rewritten during its flush pending (compare-and-delete), then flushes the newer version', async () => {
    const cache = await newCache();
    const items = await newItems(cache, { flushDelayMs: 0 });
    const k = wbKeys();
    const claimKeys = [k.dirty, k.overlay, k.claims, k.claimIds];
    const v1 = (await items.write({ id: 9, val: 'one', n: 1 })).version;
    const claim = await claimScript.run<string[]>(redis, claimKeys, [100, 60_000]);
    expect(claim.slice(1)).toEqual(['9', `${v1}:${items.entity.hash}:{"id":9,"val":"one","n":1}`]);
    expect(await redis.zcard(k.dirty)).toBe(0); // taken by the claim
    expect(await redis.zcard(k.claims)).toBe(1);
    const v2 = (await items.write({ id: 9, val: 'two', n: 2 })).version; // lands while "flushing" v1
    expect(await redis.zscore(k.dirty, '9')).not.toBeNull(); // dirty again
    const { dead, deadDropped } = writeBehindShared(busKeys(prefix, NS));
    const [removed, superseded] = await ackScript.run<number[]>(redis, [k.overlay, k.claims, k.claimIds, dead, k.dirty, deadDropped], [claim[0]!, '100', '0', '9', v1, '']);
    expect([removed, superseded]).toEqual([0, 1]); // v1 flushed, but the overlay holds v2: kept
    expect(await items.pending(9)).toEqual({ id: 9, val: 'two', n: 2, version: v2 });
    expect(await redis.zcard(k.claims)).toBe(0);
    await newFlusher();
    await drained();
    expect((await itemsById(schema.pool, schema.name)).get(9)).toEqual({ id: 9, version: v2, val: 'two', n: 2 });
  });

  it('gives the rows of a claim whose lease ran out back to the queue (a flusher died)', async () => {
    const cache = await newCache();
    const items = await newItems(cache, { flushDelayMs: 0 });
    const k = wbKeys();
    await Promise.all([1, 2, 3].map((id) => items.write({ id, val: `r${id}`, n: id })));
    const claim = await claimScript.run<string[]>(redis, [k.dirty, k.overlay, k.claims, k.claimIds], [100, 300]);
    expect(claim.length).toBe(7); // claimed by a "flusher" that never acknowledges
    await newFlusher(); // its sweeps find nothing due until the lease ends, then take the rows back
    await drained();
    expect((await itemsById(schema.pool, schema.name)).size).toBe(3);
    expect(await redis.zcard(k.claims)).toBe(0);
  });

  it('sends rows Postgres refuses to the dead-letter list without blocking their batch; the CLI lists and retries them', async () => {
    await schema.pool.query(`ALTER TABLE ${schema.name}.items ADD CONSTRAINT n_nonneg CHECK (n >= 0)`);
    const cache = await newCache();
    const other = await newCache();
    const items = await newItems(cache, { flushDelayMs: 0 });
    const otherItems = await newItems(other);
    const good = await Promise.all(Array.from({ length: 40 }, (_, i) => items.write({ id: i, val: `ok${i}`, n: i })));
    const neg = await items.write({ id: 100, val: 'negative', n: -1 });
    await items.write({ id: 101, val: 'not a number', n: 'abc' as never });
    expect(await otherItems.get(100)).toMatchObject({ n: -1 }); // the other worker caches the pending row
    const f = await newFlusher();
    const dead: string[] = [];
    f.on('deadLetter', (d) => dead.push(`${d.id}:${d.code}`));
    const dropped = waitForEvent(other, 'received', () => other.peek('items:100') === undefined, 20_000);
    await drained();
    expect(dead.sort()).toEqual(['100:23514', '101:22P02']);
    const db = await itemsById(schema.pool, schema.name);
    expect(db.size).toBe(40);
    for (const g of good) expect(db.get(Number(g.id))?.version).toBe(g.version);
    await dropped; // readers were told: they see Postgres again (no row 100), not the refused value
    expect(await otherItems.get(100)).toBeUndefined();

    const args = ['dead-letters', '--namespace', NS, '--prefix', prefix, '--redis', REDIS_URL, '--pg', schema.url];
    const listed = await run('node', [CLI, ...args, '--json']);
    const letters = listed.stdout.trim().split('\n').map((l) => JSON.parse(l) as { id: string; code: string; reason: string; version: string });
    expect(letters.map((l) => `${l.id}:${l.code}`).sort()).toEqual(['100:23514', '101:22P02']);
    expect(letters.find((l) => l.id === '100')!.reason).toMatch(/n_nonneg/);

    await schema.pool.query(`ALTER TABLE ${schema.name}.items DROP CONSTRAINT n_nonneg`);
    const retried = await run('node', [CLI, ...args, '--retry']);
    expect(retried.stdout).toMatch(/requeued 2/);
    await until(async () => dead.length === 3 && (await redis.zcard(wbKeys().dirty)) === 0 && (await redis.zcard(wbKeys().claims)) === 0, 20_000, 'the retried rows to flush');
    expect((await itemsById(schema.pool, schema.name)).get(100)).toEqual({ id: 100, version: neg.version, val: 'negative', n: -1 });
    const again = await run('node', [CLI, ...args, '--json']);
    expect(again.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id)).toEqual(['101']);
  });

  it('rejects writes with a typed back-pressure error past maxPending, and accepts them again once flushed', async () => {
    const cache = await newCache();
    const items = await newItems(cache, { maxPending: 20, flushDelayMs: 0 });
    await Promise.all(Array.from({ length: 20 }, (_, i) => items.write({ id: i, val: 'x', n: i })));
    const refused = await items.write({ id: 20, val: 'x', n: 20 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(BackpressureError);
    expect(refused).toMatchObject({ code: 'E_WB_BACKPRESSURE', entity: 'items', pending: 20 });
    expect(cache.peek('items:20')).toBeUndefined();
    expect(await items.pending(20)).toBeUndefined();
    await items.write({ id: 5, val: 'rewrite', n: 5 }); // a row already pending may still change
    expect(items.stats.refused).toBe(1);
    await newFlusher();
    await drained();
    await items.write({ id: 20, val: 'x', n: 20 });
    await drained();
    expect((await itemsById(schema.pool, schema.name)).size).toBe(21);
    expect(await doubleApplied(schema.pool, schema.name)).toEqual([]);
  });

  it("works through the entity handle: entity(cache, ...).upsert(row, { mode: 'write-behind' }), reads overlay-first", async () => {
    await schema.pool.query(`INSERT INTO ${schema.name}.items VALUES (5, 1, 'old', 1), (6, 1, 'six', 6)`);
    const cache = await createCache<{}>({ redis: REDIS_URL, namespace: NS, prefix, maxEntries: 100, pg: schema.url });
    cleanups.push(() => cache.close());
    const handle = entity<Row>(cache, ITEMS);
    await expect(handle.upsert({ id: 5, val: 'x', n: 0 }, { mode: 'write-behind' })).rejects.toBeInstanceOf(InvalidOptionError);
    const wb = await writeBehind(cache, handle, { flushDelayMs: 0, pg: schema.url });
    cleanups.push(() => wb.close());
    const stored = await handle.upsert({ id: 5, val: 'new', n: 2 }, { mode: 'write-behind' });
    expect(stored).toMatchObject({ id: 5, val: 'new', n: 2, version: expect.stringMatching(/^\d+$/) });
    const reader = await createCache<{}>({ redis: REDIS_URL, namespace: NS, prefix, maxEntries: 100, pg: schema.url });
    cleanups.push(() => reader.close());
    const readerHandle = entity<Row>(reader, ITEMS);
    await writeBehind(reader, readerHandle, { pg: schema.url }).then((e) => cleanups.push(() => e.close()));
    // One batched read: row 5 comes from the overlay, row 6 from Postgres.
    expect(await readerHandle.getMany([5, 6])).toEqual([
      { id: 5, val: 'new', n: 2, version: stored.version },
      { id: 6, version: '1', val: 'six', n: 6 },
    ]);
    await newFlusher();
    await drained();
    expect((await itemsById(schema.pool, schema.name)).get(5)).toEqual({ id: 5, version: stored.version, val: 'new', n: 2 });
  });

  it('publishes a write made inside a transaction at once, even if the transaction rolls back (it is durable already)', async () => {
    const cache = await createCache<{}>({ redis: REDIS_URL, namespace: NS, prefix, maxEntries: 100, pg: schema.url });
    cleanups.push(() => cache.close());
    const other = await newCache();
    const items = await newItems(cache);
    await newItems(other);
    expect(await (await newItems(await newCache())).get(8)).toBeUndefined();
    const told = waitForEvent(other, 'received', () => true, 10_000);
    const failed = await transaction(cache, async () => {
      await items.write({ id: 8, val: 'kept', n: 8 });
      throw new Error('rollback');
    }).catch((e: unknown) => e);
    expect(failed).toMatchObject({ message: 'rollback' });
    await told;
    expect(cache.peek('items:8')).toMatchObject({ val: 'kept' });
    expect(await items.pending(8)).toMatchObject({ val: 'kept' });
  });

  it('I6: every worker reads a write as soon as it resolved, never the older Postgres row', async () => {
    await schema.pool.query(`INSERT INTO ${schema.name}.items VALUES (1, 1, 'old', 1)`);
    const options = {
      cache: { redis: REDIS_URL, namespace: NS, prefix, maxEntries: 100 },
      entity: ITEMS,
      writeBehind: { pg: schema.url, flushDelayMs: 600_000 },
    };
    const [a, b, c] = await Promise.all([WbProc.start('wb-worker', options), WbProc.start('wb-worker', options), WbProc.start('wb-worker', options)]);
    cleanups.push(() => Promise.all([a.stop(), b.stop(), c.stop()]));
    await newFlusher(); // running, but the flush delay keeps the write pending for the whole test
    expect(await a.call('get', { key: 1 })).toMatchObject({ val: 'old', version: '1' }); // A caches the Postgres row
    const seen = waitForEvent(a, 'received', () => true, 10_000);
    const w = await b.call<{ version: string }>('write', { row: { id: 1, val: 'new', n: 2 } });
    expect(await c.call('get', { key: 1 })).toEqual({ id: 1, val: 'new', n: 2, version: w.version }); // right after: C misses → overlay
    expect(await b.call('peek', { key: 1 })).toMatchObject({ val: 'new' });
    await seen; // A drops its copy when the invalidation arrives...
    expect(await a.call('get', { key: 1 })).toMatchObject({ val: 'new', version: w.version }); // ...and reads the overlay
    expect((await itemsById(schema.pool, schema.name)).get(1)).toMatchObject({ val: 'old', version: '1' }); // still deferred
  });
});
