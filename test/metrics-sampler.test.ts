import { afterEach, describe, expect, it } from 'vitest';
import { Cache, createCache, InvalidOptionError, StaleSampler, type StaleResult } from '../worker-runtime/index.js';
import { CacheMetrics } from '../worker-runtime/metrics/index.js';
import { parseExposition, value } from './helpers/prometheus.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { waitForEvent } from './helpers/wait.js';

type Row = { id: number; version: number };
const caches: Cache<Row>[] = [];
const prefixes: string[] = [];

afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  for (const p of prefixes.splice(0)) await cleanupPrefix(p);
});

async function make(extra: Record<string, unknown> = {}, redis = false): Promise<Cache<Row>> {
  const prefix = randomPrefix();
  prefixes.push(prefix);
  const c = await createCache<Row>({ redis: redis ? REDIS_URL : false, namespace: 'shop', prefix, maxEntries: 100, ...extra });
  caches.push(c);
  return c;
}

const checked = (c: Cache<Row>, result?: StaleResult) =>
  waitForEvent<{ result: StaleResult; ageSeconds?: number }>(c.staleSampler!, 'checked', (i) => result === undefined || i.result === result);

describe('stale-read sampler', () => {
  it('installs nothing on the hit path when the rate is 0', async () => {
    const c = await make();
    expect(Object.hasOwn(c, 'get')).toBe(false);
    expect(c.get).toBe(Cache.prototype.get);
    expect(c.staleSampler).toBeUndefined();
    const s = await make({ staleSampleRate: 0.5 });
    expect(Object.hasOwn(s, 'get')).toBe(true);
    expect(s.staleSampler).toBeInstanceOf(StaleSampler);
  });

  it('validates its options, naming the option', async () => {
    await expect(make({ staleSampleRate: 2 })).rejects.toThrow(InvalidOptionError);
    await expect(make({ staleSampleRate: -0.1 })).rejects.toThrow(/options\.staleSampleRate/);
    await expect(make({ staleSampleRate: 0.1, staleSampleConcurrency: 0 })).rejects.toThrow(/options\.staleSampleConcurrency/);
    await expect(make({ staleSampleRate: 0.1, staleCheck: {} })).rejects.toThrow(/options\.staleCheck/);
  });

  it('counts a hit as stale when the source changed and the worker still serves the old value', async () => {
    const source = new Map<string, Row>([['r1', { id: 1, version: 1 }]]);
    const c = await make({ staleSampleRate: 1 });
    const load = () => source.get('r1');
    await c.get('r1', load);
    let done = checked(c);
    expect(c.get('r1', load)).toEqual({ id: 1, version: 1 });
    expect((await done).result).toBe('fresh');
    source.set('r1', { id: 1, version: 2 }); // written elsewhere; the invalidation never came
    done = checked(c);
    expect(c.get('r1', load)).toEqual({ id: 1, version: 1 }); // the hit itself is unchanged
    expect(await done).toEqual({ result: 'stale' });
    expect(c.staleSampler!.stats).toMatchObject({ sampled: 2, fresh: 1, stale: 1, inconclusive: 0, errors: 0 });
  });

  it('is inconclusive when the entry was invalidated while the check ran (a racing write)', async () => {
    let release!: (r: Row) => void;
    const c = await make({ staleSampleRate: 1 });
    await c.get('r1', () => ({ id: 1, version: 1 }));
    const done = checked(c);
    let entered!: () => void;
    const inCheck = new Promise<void>((r) => { entered = r; });
    c.get('r1', () => { entered(); return new Promise<Row>((r) => { release = r; }); });
    await inCheck; // the check is reading the source
    await c.invalidate('r1');
    release({ id: 1, version: 2 });
    expect((await done).result).toBe('inconclusive');
  });

  it('uses a version compare with a known change time: age of the stale read, or fresh if the change came later', async () => {
    const changedAt = Date.now() - 5_000;
    const c = await make({
      staleSampleRate: 1,
      staleCheck: { check: (_key: string, cached: Row) => ({ stale: cached.version < 2, since: changedAt }) },
    });
    const m = new CacheMetrics({ worker: 'w1', cluster: false });
    m.add(c);
    await c.get('r1', () => ({ id: 1, version: 1 }));
    let done = checked(c);
    c.get('r1', () => undefined);
    const r = await done;
    expect(r.result).toBe('stale');
    expect(r.ageSeconds).toBeGreaterThanOrEqual(5);
    expect(r.ageSeconds).toBeLessThan(60);
    const e = parseExposition(await m.metrics());
    expect(value(e, 'cachebus_stale_reads_total')).toBe(1);
    expect(value(e, 'cachebus_stale_checks_total', { result: 'stale' })).toBe(1);
    expect(value(e, 'cachebus_stale_checks_total', { result: 'fresh' })).toBe(0);
    expect(value(e, 'cachebus_stale_read_age_seconds_count')).toBe(1);
    expect(value(e, 'cachebus_stale_read_age_seconds_bucket', { le: '10' })).toBe(1);
    expect(value(e, 'cachebus_stale_read_age_seconds_bucket', { le: '1' })).toBe(0);
    m.close();

    const later = await make({
      staleSampleRate: 1,
      staleCheck: { check: () => ({ stale: true, since: Date.now() + 60_000 }) },
    });
    await later.get('r1', () => ({ id: 1, version: 1 }));
    done = checked(later);
    later.get('r1', () => undefined);
    expect((await done).result).toBe('fresh');
  });

  it('counts loader errors and never lets them out', async () => {
    const c = await make({ staleSampleRate: 1 });
    await c.get('r1', () => ({ id: 1, version: 1 }));
    const done = checked(c);
    expect(c.get('r1', () => { throw new Error('db down'); })).toEqual({ id: 1, version: 1 });
    expect((await done).result).toBe('error');
    expect(c.staleSampler!.stats.errors).toBe(1);
  });

  it('bounds the checks in flight and counts the hits it skipped', async () => {
    const c = await make({ staleSampleRate: 1, staleSampleConcurrency: 1 });
    await c.get('r1', () => ({ id: 1, version: 1 }));
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const slow = async (): Promise<Row> => { await gate; return { id: 1, version: 1 }; };
    const first = checked(c, 'fresh');
    for (let i = 0; i < 4; i++) c.get('r1', slow);
    expect(c.staleSampler!.stats).toMatchObject({ sampled: 4, skipped: 3 });
    expect(c.staleSampler!.inFlight).toBe(1);
    release();
    await first;
    expect(c.staleSampler!.stats).toMatchObject({ fresh: 1, skipped: 3 });
  });

  it('samples about the configured fraction of hits', async () => {
    const c = await make({ staleSampleRate: 0.05, staleSampleConcurrency: 10_000 });
    await c.get('r1', () => ({ id: 1, version: 1 }));
    const load = (): Row => ({ id: 1, version: 1 });
    for (let i = 0; i < 20_000; i++) c.get('r1', load);
    const n = c.staleSampler!.stats.sampled;
    // 1000 expected; the binomial standard deviation is ~31: ±6 sigma
    expect(n).toBeGreaterThan(800);
    expect(n).toBeLessThan(1200);
  });

  it('samples hits of a cache on the bus too, and keeps its metrics apart from the hit counters', async () => {
    const c = await make({ staleSampleRate: 1 }, true);
    const m = new CacheMetrics({ worker: 'w1', cluster: false });
    m.add(c);
    await c.get('r1', () => ({ id: 1, version: 1 }));
    const done = checked(c);
    c.get('r1', () => ({ id: 1, version: 1 }));
    await done;
    const e = parseExposition(await m.metrics());
    expect(value(e, 'cachebus_hits_total')).toBe(1);
    expect(value(e, 'cachebus_loads_total')).toBe(1); // the check's load is not a cache load
    expect(value(e, 'cachebus_stale_checks_total', { result: 'fresh' })).toBe(1);
    m.close();
  });
});
