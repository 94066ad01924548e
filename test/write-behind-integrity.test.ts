/**
 * Issue 12, cases 1-5: an acknowledged write-behind write reaches Postgres, unchanged.
 * Real Redis and Postgres; every test has its own key prefix and schema.
 */
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidKeyError, InvalidValueError } from '../bus/errors.js';
import { busKeys, writeBehindKeys, writeBehindShared } from '../bus/keys.js';
import { ackScript } from '../bus/write-behind/lua-ack.js';
import { claimScript } from '../bus/write-behind/lua-claim.js';
import { releaseScript } from '../bus/write-behind/lua-release.js';
import { Flusher } from '../bus/write-behind/flusher.js';
import { classifyPgError } from '../bus/write-behind/pg-errors.js';
import { UPSERT_METHODS } from '../bus/write-behind/upsert.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { writeBehind, type WriteBehindEntity } from '../worker-runtime/write-behind/write-behind.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL, TestRedis } from './helpers/redis.js';
import { until } from './helpers/wait.js';
import { createItems, ITEMS, itemsById } from './fixtures/wb-db.js';

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

async function newCache(url = REDIS_URL, extra: Record<string, unknown> = {}): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: url, namespace: NS, prefix, maxEntries: 10_000, ...extra });
  cleanups.push(() => c.close());
  return c;
}
async function newWb(cache: Cache<{}>, def: Parameters<typeof writeBehind>[1] = ITEMS, opts: Parameters<typeof writeBehind>[2] = {}): Promise<WriteBehindEntity> {
  const e = await writeBehind(cache, def, { pg: schema.url, ...opts });
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
const drained = (entity = 'items', r: Redis = redis): Promise<unknown> => until(async () => {
  const k = keysOf(entity);
  return (await r.hlen(k.overlay)) === 0 && (await r.zcard(k.dirty)) === 0 && (await r.zcard(k.claims)) === 0;
}, 20_000, `the ${entity} overlay to drain`);

describe('write-behind integrity (issue 12)', () => {
  it('case 1: two claims started in the same ms on the same first id get distinct ids; a failed one re-queues its rows', async () => {
    const cache = await newCache();
    const items = await newWb(cache, ITEMS, { flushDelayMs: 0 });
    const k = keysOf();
    const { dead, deadDropped } = writeBehindShared(busKeys(prefix, NS));
    for (let round = 0; round < 5; round++) {
      const v1 = (await items.write({ id: 1, val: `a${round}`, n: 1 })).version;
      const v2 = String(BigInt(v1) + 1n);
      // Claim, rewrite (a newer version lands and is dirty again), claim: one MULTI, so the same ms.
      const res = await redis.multi()
        .evalsha(claimScript.sha, 4, k.dirty, k.overlay, k.claims, k.claimIds, 100, 60_000)
        .hset(k.overlay, '1', `${v2}:${items.entity.hash}:{"id":1,"val":"b${round}","n":2}`)
        .zadd(k.dirty, 0, '1')
        .evalsha(claimScript.sha, 4, k.dirty, k.overlay, k.claims, k.claimIds, 100, 60_000)
        .exec();
      const a = res![0]![1] as string[];
      const b = res![3]![1] as string[];
      expect(a[0]).not.toBe(b[0]); // unique by construction
      // Claim a is written and acknowledged (v1: superseded, kept); claim b fails and is given back.
      await ackScript.run(redis, [k.overlay, k.claims, k.claimIds, dead, k.dirty, deadDropped], [a[0]!, '100', '0', '1', v1, '']);
      await releaseScript.run(redis, [k.dirty, k.overlay, k.claims, k.claimIds], [b[0]!]);
      expect(await redis.zscore(k.dirty, '1')).not.toBeNull(); // due again, not stranded in the overlay
      expect(await redis.zcard(k.claims)).toBe(0);
      await redis.del(k.dirty, k.overlay);
    }
  });

  it('case 2: a flusher started with an old definition writes a column a newer app version added', async () => {
    const old = await newCache();
    const a = await newWb(old, ITEMS, { flushDelayMs: 0 });
    const flusher = await newFlusher();
    await a.write({ id: 1, val: 'old app', n: 1 });
    await drained();
    expect(flusher.entities.map((e) => e.columns)).toEqual([['val', 'n']]);
    // Rolling deploy: the column is added, a new app version writes it; the flusher keeps running.
    await schema.pool.query('ALTER TABLE items ADD COLUMN extra text');
    const neu = await newCache();
    const b = await newWb(neu, { ...ITEMS, columns: ['val', 'n', 'extra'] }, { flushDelayMs: 0 });
    await b.write({ id: 2, val: 'new app', n: 2, extra: 'kept' });
    await a.write({ id: 3, val: 'old app again', n: 3 }); // an old instance still writes too
    await drained();
    const rows = await schema.pool.query('SELECT id, val, extra FROM items ORDER BY id');
    expect(rows.rows).toEqual([
      { id: 1, val: 'old app', extra: null }, { id: 2, val: 'new app', extra: 'kept' }, { id: 3, val: 'old app again', extra: null },
    ]);
  });

  it('case 3: after a Redis reset, a sidecar started later flushes every write acknowledged after the reset', async () => {
    const server = await TestRedis.start();
    cleanups.push(() => server.dispose());
    const admin = new Redis(server.url);
    cleanups.push(async () => admin.disconnect());
    const cache = await newCache(server.url);
    const items = await newWb(cache, ITEMS, { flushDelayMs: 0 });
    await items.write({ id: 0, val: 'before', n: 0 });
    await admin.flushall(); // our own server: Redis lost its data (restart without persistence)
    for (let i = 1; i <= 50; i++) await items.write({ id: i, val: `after ${i}`, n: i });
    const flusher = await newFlusher({ redis: server.url });
    await drained('items', admin);
    const db = await itemsById(schema.pool, schema.name);
    for (let i = 1; i <= 50; i++) expect(db.get(i)?.val).toBe(`after ${i}`);
    expect(flusher.entities.map((e) => e.name)).toEqual(['items']);
  });

  it('case 4: a write refused for its key changes nothing in Redis', async () => {
    const cache = await newCache(REDIS_URL, { maxKeyBytes: 64, maxEntryBytes: 1024 });
    const items = await newWb(cache, ITEMS, { flushDelayMs: 0 });
    const long = '1'.repeat(80);
    const k = keysOf();
    await expect(items.write({ id: long, val: 'x', n: 1 })).rejects.toBeInstanceOf(InvalidKeyError);
    expect(await redis.hlen(k.overlay)).toBe(0);
    expect(await redis.zcard(k.dirty)).toBe(0);
    await expect(items.write({ id: 1, val: Symbol('x') } as never)).rejects.toBeInstanceOf(InvalidValueError);
    expect(await redis.hlen(k.overlay)).toBe(0);
  });

  it('case 5: stores exactly what write-through stores, for every type and every upsert method; refuses what it cannot represent', async () => {
    await schema.pool.query(`CREATE TABLE t (id int PRIMARY KEY, version bigint NOT NULL, b bytea, f float8, r real, j jsonb, js json,
      ai int[], at text[], ts timestamp, tz timestamptz, num numeric(8,2), vc varchar(5), big bigint, flag boolean)`);
    const def = { name: 't', version: 'version', columns: ['b', 'f', 'r', 'j', 'js', 'ai', 'at', 'ts', 'tz', 'num', 'vc', 'big', 'flag'] };
    const when = new Date(Date.UTC(2024, 1, 29, 23, 59, 58, 123));
    const rows: Record<string, unknown>[] = [
      { b: Buffer.from([0, 1, 255]), f: NaN, r: Infinity, j: '{"a": 1}', js: '{ "a" : 1 }', ai: [1, null, 3], at: ['a"b', 'c,d', null, '{x}', 'back\\slash'],
        ts: when, tz: when, num: '12.345', vc: 'abc', big: 9007199254740993n, flag: true },
      { b: new Uint8Array([7, 8]), f: -Infinity, r: 1.5, j: { a: [1, { b: 'c' }], d: null }, js: { z: 1 }, ai: [[1, 2], [3, 4]], at: [],
        ts: null, tz: '2024-01-01 10:00:00+02', num: 3, vc: 't\tx', big: '42', flag: false },
      { b: null, f: 0.1, r: null, j: 'null', js: '[1, 2]', ai: null, at: ['x'], ts: '2020-01-01 00:00:00', tz: null, num: null, vc: null, big: null, flag: null },
    ];
    const cols = ['b', 'f', 'r', 'j', 'js', 'ai', 'at', 'ts', 'tz', 'num', 'vc', 'big', 'flag'];
    // Write-through: what pg stores for these values (ids 1..n).
    for (const [i, row] of rows.entries()) {
      await schema.pool.query(`INSERT INTO t (id, version, ${cols.join(', ')}) VALUES ($1, 1, ${cols.map((_, c) => `$${c + 2}`).join(', ')})`,
        [i + 1, ...cols.map((c) => row[c])]);
    }
    const cache = await newCache();
    const t = await newWb(cache, def, { flushDelayMs: 0 });
    for (const [m, method] of UPSERT_METHODS.entries()) {
      const flusher = await newFlusher({ upsertMethod: method });
      const base = (m + 1) * 100;
      for (const [i, row] of rows.entries()) await t.write({ id: base + i + 1, ...row });
      await drained('t');
      expect(flusher.stats.deadLetters).toBe(0);
      await flusher.close();
      const diff = await schema.pool.query(`SELECT a.id, ${cols.map((c) => `a.${c}::text AS a_${c}, b.${c}::text AS b_${c}`).join(', ')}
        FROM t a JOIN t b ON b.id = a.id + ${base} WHERE a.id < 100`);
      expect(diff.rowCount).toBe(rows.length);
      for (const d of diff.rows) for (const c of cols) expect([method, d.id, c, d[`b_${c}`]]).toEqual([method, d.id, c, d[`a_${c}`]]);
    }
    // What cannot be represented is refused at write(), nothing written.
    await expect(t.write({ id: 1, ai: [1, () => 2] } as never)).rejects.toBeInstanceOf(InvalidValueError);
    await expect(t.write({ id: 1, ts: new Date(NaN) })).rejects.toBeInstanceOf(InvalidValueError);
    expect(await redis.hlen(keysOf('t').overlay)).toBe(0);
    // A type error is a row error (dead letter with its reason), never retried forever.
    expect(classifyPgError({ code: '42804' })).toBe('row');
    expect(classifyPgError({ code: '42P01' })).toBe('retry');
  });
});
