import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createCache, type Cache, InvalidKeyError, InvalidOptionError, ConnectionError, ClosedError } from '../worker-runtime/index.js';
import { busKeys } from '../bus/keys.js';
import { cleanupPrefix, freePort, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { waitForEvent } from './helpers/wait.js';

let prefix: string;
const caches: Cache<{}>[] = [];
let raw: Redis;

async function make(extra: Record<string, unknown> = {}): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 1000, ...extra });
  caches.push(c);
  return c;
}

beforeEach(() => {
  prefix = randomPrefix();
  raw = new Redis(REDIS_URL);
});

afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  raw.disconnect();
  await cleanupPrefix(prefix);
});

const gate = <T>() => {
  let open!: (v: T) => void;
  const p = new Promise<T>((r) => { open = r; });
  return { p, open };
};

describe('read-through', () => {
  it('answers a hit synchronously and loads a miss once per key (single-flight)', async () => {
    const c = await make();
    const g = gate<string>();
    let calls = 0;
    const loads = Array.from({ length: 10 }, () => c.get('k', () => { calls++; return g.p; }));
    g.open('v1');
    expect(await Promise.all(loads)).toEqual(Array(10).fill('v1'));
    expect(calls).toBe(1);
    expect(c.get('k', () => 'never')).toBe('v1'); // not a promise: a plain value
    expect(c.stats).toMatchObject({ hits: 1, misses: 10, loads: 1 });
  });

  it('does not cache a failed load, and lets the next get retry', async () => {
    const c = await make();
    await expect(c.get('k', () => { throw new Error('db down'); })).rejects.toThrow('db down');
    expect(await c.get('k', () => 'ok')).toBe('ok');
    expect(c.stats.loadErrors).toBe(1);
  });

  it('I1: a load overtaken by an invalidation of its key is returned but not stored', async () => {
    const a = await make();
    const b = await make();
    const g = gate<string>();
    const inFlight = a.get('k', () => g.p);
    const applied = waitForEvent(a, 'received');
    await b.invalidate('k');
    await applied; // the invalidation has been applied while the load is still held
    g.open('old');
    expect(await inFlight).toBe('old');
    expect(a.peek('k')).toBeUndefined();
    expect(a.stats.loadsDiscarded).toBe(1);
    // a get after the invalidation starts a fresh load instead of joining the poisoned one
    expect(await a.get('k', () => 'new')).toBe('new');
  });

  it('I1: the same holds for a tag, and for a clear', async () => {
    const a = await make();
    const b = await make();
    for (const [name, act] of [['tag', () => b.invalidateTags('cat:7')], ['clear', () => b.clear()]] as const) {
      const g = gate<string>();
      const inFlight = a.get(`k-${name}`, () => g.p, { tags: ['cat:7'] });
      const applied = waitForEvent(a, 'received');
      await act();
      await applied;
      g.open('old');
      expect(await inFlight).toBe('old');
      expect(a.peek(`k-${name}`)).toBeUndefined();
    }
  });

  it('a local invalidate also poisons the local in-flight load', async () => {
    const a = await make();
    const g = gate<string>();
    const inFlight = a.get('k', () => g.p);
    await a.invalidate('k');
    g.open('old');
    await inFlight;
    expect(a.peek('k')).toBeUndefined();
  });
});

describe('invalidation across caches', () => {
  it('invalidate drops here at once and in other caches; resolves once the entry is in the stream', async () => {
    const a = await make();
    const b = await make();
    await a.get('product:42', () => 'A');
    await b.get('product:42', () => 'B');
    const received = waitForEvent<{ keys: number; dropped: number }>(b, 'received');
    const p = a.invalidate('product:42');
    expect(a.peek('product:42')).toBeUndefined(); // synchronous local drop
    await p;
    const entries = await raw.xrange(busKeys(prefix, 'shop').stream, '-', '+');
    expect(entries).toHaveLength(1);
    expect(entries[0]![1]).toContain('["product:42"]');
    expect(await received).toMatchObject({ keys: 1, dropped: 1 });
    expect(b.peek('product:42')).toBeUndefined();
  });

  it('skips its own echo', async () => {
    const a = await make();
    const b = await make();
    const seen = waitForEvent(b, 'received');
    await a.invalidate('x');
    await seen;
    const seenByA = waitForEvent(a, 'received');
    await b.invalidate('y');
    await seenByA;
    expect(a.stats.entriesReceived).toBe(1);
    expect(b.stats.entriesReceived).toBe(1);
  });

  it('batches the invalidations of one tick into one stream entry', async () => {
    const a = await make();
    await Promise.all([a.invalidate('a'), a.invalidate('b', 'c'), a.invalidateTags('t')]);
    const entries = await raw.xrange(busKeys(prefix, 'shop').stream, '-', '+');
    expect(entries).toHaveLength(1);
  });

  for (const wake of ['stream', 'host'] as const) {
    it(`invalidate() and invalidateTags() of nothing publish nothing: no empty entry for every reader to count as malformed (wake: '${wake}')`, async () => {
      const a = await make({ wake });
      const b = await make({ wake });
      await Promise.all([a.invalidate(), a.invalidateTags(), a.invalidate(...[])]);
      const received = waitForEvent(b, 'received');
      await a.invalidate('k'); // then a real one, which b applies
      await received;
      expect(await raw.xlen(busKeys(prefix, 'shop').stream)).toBe(1);
      expect(b.stats.badEntries.malformed).toBe(0);
      expect(b.stats.entriesReceived).toBe(1);
      expect(b.bus?.hostWakeStats?.ignored ?? 0).toBe(0);
    });
  }

  it('set stores locally and makes other caches drop their copy', async () => {
    const a = await make();
    const b = await make();
    await b.get('k', () => 'old');
    const dropped = waitForEvent(b, 'received');
    await a.set('k', 'new');
    await dropped;
    expect(a.peek('k')).toBe('new');
    expect(await b.get('k', () => 'new')).toBe('new');
  });

  it('tags and clear reach other caches', async () => {
    const a = await make();
    const b = await make();
    await b.get('p1', () => 1, { tags: ['cat:7'] });
    await b.get('p2', () => 2, { tags: ['cat:8'] });
    await b.get('p3', () => 3);
    let r = waitForEvent(b, 'received');
    await a.invalidateTags('cat:7');
    await r;
    expect([b.peek('p1'), b.peek('p2'), b.peek('p3')]).toEqual([undefined, 2, 3]);
    r = waitForEvent(b, 'received');
    await a.clear();
    await r;
    expect(b.size).toBe(0);
    expect(b.stats.clears.remote).toBe(1);
  });

  it('keeps MAXLEN retention approximate and bounded', async () => {
    const a = await make({ streamMaxLen: 100 });
    for (let i = 0; i < 30; i++) await Promise.all(Array.from({ length: 20 }, (_, j) => a.invalidate(`k${i}-${j}`)).concat([]));
    for (let i = 0; i < 600; i++) await a.invalidate(`z${i}`);
    const len = await raw.xlen(busKeys(prefix, 'shop').stream);
    expect(len).toBeLessThan(400); // ~ trims in whole radix nodes (100 entries by default)
  });
});

describe('bad input', () => {
  it('I7: malformed, unknown-version and oversized entries are skipped and counted; later good entries still apply', async () => {
    const a = await make({ maxEntryBytes: 4096 });
    await a.get('good', () => 'v');
    const stream = busKeys(prefix, 'shop').stream;
    await raw.xadd(stream, '*', 'v', '1', 'k', 'not-json');
    await raw.xadd(stream, '*', 'v', '2', 'k', '["good"]');
    await raw.xadd(stream, '*', 'v', '1', 'k', JSON.stringify(['x'.repeat(5000)]));
    await raw.xadd(stream, '*', 'garbage', 'yes');
    const ok = waitForEvent<{ keys: number }>(a, 'received');
    await raw.xadd(stream, '*', 'v', '1', 'k', '["good"]');
    await ok;
    expect(a.peek('good')).toBeUndefined();
    expect(a.stats.badEntries).toMatchObject({ malformed: 2, version: 1, oversized: 1 });
  });

  it('I7: with signing on, unsigned entries are skipped and signed ones apply', async () => {
    const a = await make({ secret: 'shh' });
    const b = await make({ secret: 'shh' });
    await a.get('k', () => 'v');
    await raw.xadd(busKeys(prefix, 'shop').stream, '*', 'v', '1', 'k', '["k"]');
    const r = waitForEvent(a, 'received');
    await b.invalidate('k');
    await r;
    expect(a.stats.badEntries.signature).toBe(1);
    expect(a.peek('k')).toBeUndefined();
  });

  it('rejects bad keys and options with typed errors that name the option', async () => {
    const a = await make({ maxKeyBytes: 64 });
    await expect(a.invalidate('x'.repeat(65))).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(a.get('', () => 1)).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(a.set('k', undefined as unknown as {})).rejects.toThrow(/undefined/);
    await expect(createCache({ namespace: 'shop' })).rejects.toThrow(/options.maxEntries or options.maxBytes/);
    await expect(createCache({ namespace: 'a b', maxEntries: 1 })).rejects.toThrow(/options.namespace/);
    await expect(createCache({ namespace: 'x', maxEntries: -1 })).rejects.toBeInstanceOf(InvalidOptionError);
    await expect(createCache({ namespace: 'x', maxEntries: 1, policy: 'mru' as never })).rejects.toThrow(/options.policy/);
  });

  it('rejects with ConnectionError when Redis is unreachable', async () => {
    const port = await freePort();
    const err = await createCache({ redis: `redis://127.0.0.1:${port}`, namespace: 'x', maxEntries: 1, connectTimeoutMs: 500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectionError);
    expect((err as ConnectionError).code).toBe('E_REDIS_UNAVAILABLE');
  });

  it('close is idempotent and later calls fail with ClosedError', async () => {
    const a = await make();
    await Promise.all([a.close(), a.close()]);
    await expect(a.invalidate('k')).rejects.toBeInstanceOf(ClosedError);
    await expect(a.get('k', () => 1)).rejects.toBeInstanceOf(ClosedError);
  });

  it('maxBytes bounds the local store by the measured size', async () => {
    const a = await createCache<{}>({ redis: false, namespace: 'x', maxBytes: 1000 });
    for (let i = 0; i < 100; i++) await a.get(`k${i}`, () => 'x'.repeat(50));
    expect(a.bytes).toBeLessThanOrEqual(1000);
    expect(a.stats.evictions.evict).toBeGreaterThan(0);
    await a.close();
  });
});
