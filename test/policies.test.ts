import { afterEach, describe, expect, it, vi } from 'vitest';
import { InvalidOptionError } from '../bus/errors.js';
import { createStore, type EvictReason, type PolicyName, type StoreOptions } from '../worker-runtime/policies/index.js';

/** lru-cache captured this object at import; fake timers replace the global, not it. */
const realPerformance = globalThis.performance;

const HOUR = 3_600_000;
const POLICIES: PolicyName[] = ['lru', 'lfu', 'fifo', 'ttl'];
const sizeOf = (v: string) => v.length;

type Event = [key: string, value: string, reason: EvictReason];

/** A string store recording onEvict calls; `ttl` defaults to an hour for the TTL-only policy. */
function make(policy: PolicyName, opts: StoreOptions<string> = {}) {
  const events: Event[] = [];
  const store = createStore<string>(policy, {
    ...(policy === 'ttl' ? { ttl: HOUR } : {}),
    ...opts,
    onEvict: (key, value, reason) => events.push([key, value, reason]),
  });
  return { store, events };
}

/** Fake clock driving Date.now() (our policies) and lru-cache's performance.now(). */
function useClock(): void {
  vi.useFakeTimers();
  vi.setSystemTime(new Date('2025-01-01T00:00:00Z'));
  vi.spyOn(realPerformance, 'now').mockImplementation(() => Date.now());
}

/** Sum of sizeOf over the live entries, read with peek. */
function liveBytes(store: ReturnType<typeof make>['store']): number {
  let n = 0;
  for (const k of [...store.keys()]) n += store.peek(k)!.length;
  return n;
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe.each(POLICIES)('%s store: common contract', (policy) => {
  it('evicts the first-set entry on maxEntries and reports "evict"', () => {
    const { store, events } = make(policy, { maxEntries: 2 });
    store.set('a', 'A');
    store.set('b', 'B');
    expect(store.set('c', 'C')).toBe(true);
    expect(events).toEqual([['a', 'A', 'evict']]);
    expect(store.size).toBe(2);
    expect(store.peek('a')).toBeUndefined();
    expect([...store.keys()].sort()).toEqual(['b', 'c']);
  });

  it('accounts bytes through set, overwrite, delete and eviction', () => {
    const { store, events } = make(policy, { maxBytes: 10, sizeOf });
    store.set('a', 'xxx');
    expect(store.bytes).toBe(3);
    store.set('b', 'yyyy');
    expect(store.bytes).toBe(7);
    store.set('a', 'x');
    expect(store.bytes).toBe(5);
    expect(store.delete('b')).toBe(true);
    expect(store.bytes).toBe(1);
    expect(store.delete('b')).toBe(false);
    expect(store.bytes).toBe(1);
    store.set('c', 'ccccccccc');
    expect(store.bytes).toBe(10);
    expect(store.size).toBe(2);
    expect(events).toEqual([]);

    store.set('d', 'dd');
    expect(store.peek('d')).toBe('dd');
    expect(store.bytes).toBeLessThanOrEqual(10);
    expect(store.bytes).toBe(liveBytes(store));
    expect(events.length).toBeGreaterThan(0);
    for (const [key, , reason] of events) {
      expect(reason).toBe('evict');
      expect(store.peek(key)).toBeUndefined();
    }
  });

  it('rejects an entry larger than maxBytes, storing nothing', () => {
    const { store, events } = make(policy, { maxBytes: 5, sizeOf });
    expect(store.set('big', 'xxxxxx')).toBe(false);
    expect(store.peek('big')).toBeUndefined();
    expect(store.size).toBe(0);
    expect(store.bytes).toBe(0);
    expect(store.set('fits', 'xxxxx')).toBe(true);
    expect(store.bytes).toBe(5);
    // An oversized overwrite drops the old value too (as lru-cache does), silently.
    expect(store.set('fits', 'xxxxxxx')).toBe(false);
    expect(store.peek('fits')).toBeUndefined();
    expect(store.size).toBe(0);
    expect(store.bytes).toBe(0);
    expect(events).toEqual([]);
  });

  it('never reports delete, clear or overwrite to onEvict', () => {
    const { store, events } = make(policy, { maxEntries: 3 });
    store.set('a', 'A1');
    store.set('a', 'A2');
    expect(store.get('a')).toBe('A2');
    expect(store.size).toBe(1);
    store.delete('a');
    store.set('b', 'B');
    store.set('c', 'C');
    store.clear();
    expect(events).toEqual([]);
  });

  it('clear resets size and bytes and leaves the store usable', () => {
    const { store } = make(policy, { maxBytes: 100, sizeOf });
    store.set('a', 'aaa');
    store.set('b', 'bb');
    store.clear();
    expect(store.size).toBe(0);
    expect(store.bytes).toBe(0);
    expect([...store.keys()]).toEqual([]);
    expect(store.get('a')).toBeUndefined();
    store.set('c', 'cccc');
    expect(store.size).toBe(1);
    expect(store.bytes).toBe(4);
  });

  it('expires entries after ttl and reports "expire"', () => {
    useClock();
    const { store, events } = make(policy, { maxEntries: 10, ttl: 1000 });
    store.set('a', 'A');
    store.set('b', 'B', 50);
    vi.advanceTimersByTime(51);
    expect(store.get('b')).toBeUndefined();
    expect(events).toEqual([['b', 'B', 'expire']]);
    vi.advanceTimersByTime(949);
    expect(store.get('a')).toBe('A');
    vi.advanceTimersByTime(1);
    expect(store.get('a')).toBeUndefined();
    expect(events).toEqual([['b', 'B', 'expire'], ['a', 'A', 'expire']]);
    expect(store.size).toBe(0);
  });

  it('does not extend ttl on get, but renews it on set', () => {
    useClock();
    const { store } = make(policy, { maxEntries: 10, ttl: 1000 });
    store.set('a', 'A');
    store.set('b', 'B');
    vi.advanceTimersByTime(600);
    expect(store.get('a')).toBe('A');
    store.set('b', 'B2');
    vi.advanceTimersByTime(600);
    expect(store.get('a')).toBeUndefined();
    expect(store.get('b')).toBe('B2');
  });
});

describe('lru store', () => {
  it('evicts the least recently read entry', () => {
    const { store, events } = make('lru', { maxEntries: 3 });
    store.set('a', 'A');
    store.set('b', 'B');
    store.set('c', 'C');
    store.get('a');
    store.set('d', 'D');
    expect(events).toEqual([['b', 'B', 'evict']]);
    expect(store.peek('a')).toBe('A');
  });

  it('peek does not refresh recency', () => {
    const { store, events } = make('lru', { maxEntries: 2 });
    store.set('a', 'A');
    store.set('b', 'B');
    store.peek('a');
    store.set('c', 'C');
    expect(events).toEqual([['a', 'A', 'evict']]);
  });

  it('evicts by bytes in recency order', () => {
    const { store, events } = make('lru', { maxBytes: 10, sizeOf });
    store.set('a', 'aaaa');
    store.set('b', 'bbbb');
    store.get('a');
    store.set('c', 'cccc');
    expect(events).toEqual([['b', 'bbbb', 'evict']]);
    expect(store.bytes).toBe(8);
  });
});

describe('lfu store', () => {
  it('keeps a frequently read key and evicts the cold one', () => {
    const { store, events } = make('lfu', { maxEntries: 2 });
    store.set('hot', 'H');
    for (let i = 0; i < 3; i++) store.get('hot');
    store.set('cold', 'C');
    store.set('new', 'N');
    expect(events).toEqual([['cold', 'C', 'evict']]);
    store.set('newer', 'N2');
    expect(events).toEqual([['cold', 'C', 'evict'], ['new', 'N', 'evict']]);
    expect(store.peek('hot')).toBe('H');
  });

  it('breaks frequency ties by least recent use', () => {
    const { store, events } = make('lfu', { maxEntries: 3 });
    store.set('a', 'A');
    store.set('b', 'B');
    store.set('c', 'C');
    store.get('b');
    store.get('a');
    store.get('c');
    store.set('d', 'D');
    expect(events).toEqual([['b', 'B', 'evict']]);
  });

  it('always admits a new entry, even when every other entry is hotter', () => {
    const { store, events } = make('lfu', { maxEntries: 2 });
    store.set('a', 'A');
    store.set('b', 'B');
    store.get('a');
    store.get('a');
    store.get('b');
    store.get('b');
    store.set('c', 'C');
    expect(events).toEqual([['a', 'A', 'evict']]);
    expect(store.peek('c')).toBe('C');
  });

  it('peek does not count as a use', () => {
    const { store, events } = make('lfu', { maxEntries: 2 });
    store.set('a', 'A');
    store.set('b', 'B');
    for (let i = 0; i < 5; i++) store.peek('a');
    store.get('b');
    store.set('c', 'C');
    expect(events).toEqual([['a', 'A', 'evict']]);
  });

  it('overwriting keeps the frequency and counts as a use', () => {
    const { store, events } = make('lfu', { maxEntries: 2 });
    store.set('a', 'A');
    store.get('a');
    store.get('a'); // freq 3
    store.set('b', 'B');
    store.get('b'); // freq 2
    store.set('a', 'A2'); // freq 4, not reset to 1
    store.set('c', 'C');
    expect(events).toEqual([['b', 'B', 'evict']]);
    expect(store.peek('a')).toBe('A2');

    const second = make('lfu', { maxEntries: 2 });
    second.store.set('a', 'A');
    second.store.set('b', 'B');
    second.store.set('a', 'A2'); // freq 2
    second.store.set('c', 'C');
    expect(second.events).toEqual([['b', 'B', 'evict']]);
  });

  it('evicts by bytes in frequency order', () => {
    const { store, events } = make('lfu', { maxBytes: 10, sizeOf });
    store.set('hot', 'hhhh');
    store.get('hot');
    store.get('hot');
    store.set('cold', 'cccc');
    store.set('new', 'nnnn');
    expect(events).toEqual([['cold', 'cccc', 'evict']]);
    expect(store.bytes).toBe(8);
    expect(store.peek('hot')).toBe('hhhh');
  });
});

describe('fifo store', () => {
  it('evicts the first inserted even if it was read most', () => {
    const { store, events } = make('fifo', { maxEntries: 3 });
    store.set('a', 'A');
    store.set('b', 'B');
    store.set('c', 'C');
    for (let i = 0; i < 5; i++) store.get('a');
    store.set('d', 'D');
    store.set('e', 'E');
    expect(events).toEqual([['a', 'A', 'evict'], ['b', 'B', 'evict']]);
  });

  it('overwriting does not move a key to the back; delete then set does', () => {
    const { store, events } = make('fifo', { maxEntries: 2 });
    store.set('a', 'A');
    store.set('b', 'B');
    store.set('a', 'A2');
    store.set('c', 'C');
    expect(events).toEqual([['a', 'A2', 'evict']]);

    const second = make('fifo', { maxEntries: 2 });
    second.store.set('a', 'A');
    second.store.set('b', 'B');
    second.store.delete('a');
    second.store.set('a', 'A2');
    second.store.set('c', 'C');
    expect(second.events).toEqual([['b', 'B', 'evict']]);
  });

  it('evicts by bytes in insertion order, never the entry being set', () => {
    const { store, events } = make('fifo', { maxBytes: 10, sizeOf });
    store.set('a', 'aaaa');
    store.set('b', 'bbbb');
    store.get('a');
    store.set('c', 'cccc');
    expect(events).toEqual([['a', 'aaaa', 'evict']]);
    expect(store.bytes).toBe(8);
    // Growing the head in place evicts the next entry instead.
    store.set('b', 'bbbbbbbb');
    expect(events).toEqual([['a', 'aaaa', 'evict'], ['c', 'cccc', 'evict']]);
    expect(store.bytes).toBe(8);
    expect(store.peek('b')).toBe('bbbbbbbb');
  });

  it('drops expired entries at the head on set', () => {
    useClock();
    const { store, events } = make('fifo', { ttl: 1000, sizeOf });
    store.set('a', 'aa');
    store.set('b', 'bbb');
    vi.advanceTimersByTime(1001);
    store.set('c', 'c');
    expect(events).toEqual([['a', 'aa', 'expire'], ['b', 'bbb', 'expire']]);
    expect(store.size).toBe(1);
    expect(store.bytes).toBe(1);
  });
});

describe('ttl store', () => {
  it('requires a positive ttl', () => {
    const message = 'options.ttl must be a positive number of ms for policy "ttl"';
    for (const ttl of [undefined, 0, -5, Number.NaN]) {
      expect(() => createStore<string>('ttl', { ttl, maxEntries: 10 })).toThrow(InvalidOptionError);
      expect(() => createStore<string>('ttl', { ttl, maxEntries: 10 })).toThrow(message);
    }
  });

  it('expires by time, whatever the reads', () => {
    useClock();
    const { store, events } = make('ttl', { ttl: 1000 });
    store.set('a', 'A');
    vi.advanceTimersByTime(500);
    store.set('b', 'B');
    for (let i = 0; i < 5; i++) store.get('a');
    vi.advanceTimersByTime(501);
    expect(store.peek('a')).toBeUndefined();
    expect(store.peek('b')).toBe('B');
    expect(events).toEqual([['a', 'A', 'expire']]);
    vi.advanceTimersByTime(500);
    expect(store.get('b')).toBeUndefined();
    expect(events).toEqual([['a', 'A', 'expire'], ['b', 'B', 'expire']]);
  });

  it('when full, evicts the entry that expires soonest rather than the oldest or coldest', () => {
    useClock();
    const { store, events } = make('ttl', { ttl: 1000, maxEntries: 2 });
    store.set('a', 'A', 5000);
    store.set('b', 'B');
    store.get('b');
    store.set('c', 'C');
    expect(events).toEqual([['b', 'B', 'evict']]);
    expect(store.peek('a')).toBe('A');
  });

  it('picks the soonest across default and per-entry ttls', () => {
    useClock();
    const { store, events } = make('ttl', { ttl: 1000, maxEntries: 3 });
    store.set('a', 'A', 3000);
    store.set('b', 'B', 2000);
    store.set('c', 'C', 4000);
    store.set('d', 'D');
    expect(events).toEqual([['b', 'B', 'evict']]);
    store.set('e', 'E', 500);
    expect(events).toEqual([['b', 'B', 'evict'], ['d', 'D', 'evict']]);
  });

  it('overwriting renews expiry and moves the entry behind later ones', () => {
    useClock();
    const { store, events } = make('ttl', { ttl: 1000, maxEntries: 2 });
    store.set('a', 'A');
    vi.advanceTimersByTime(100);
    store.set('b', 'B');
    vi.advanceTimersByTime(100);
    store.set('a', 'A2');
    store.set('c', 'C');
    expect(events).toEqual([['b', 'B', 'evict']]);

    // Overwriting the only entry of a per-entry-ttl lane with the same ttl keeps it findable.
    const second = make('ttl', { ttl: 1000, maxEntries: 2 });
    second.store.set('x', 'X', 500);
    second.store.set('x', 'X2', 500);
    second.store.set('y', 'Y');
    second.store.set('z', 'Z');
    expect(second.events).toEqual([['x', 'X2', 'evict']]);
  });

  it('sweeps expired entries on set, a bounded number at a time', () => {
    useClock();
    const { store, events } = make('ttl', { ttl: 1000, sizeOf });
    store.set('a', 'aa');
    store.set('b', 'bbb', 200);
    vi.advanceTimersByTime(1001);
    store.set('c', 'c');
    expect(events).toEqual([['b', 'bbb', 'expire'], ['a', 'aa', 'expire']]);
    expect(store.size).toBe(1);
    expect(store.bytes).toBe(1);

    for (let i = 0; i < 50; i++) store.set(`k${i}`, 'v');
    vi.advanceTimersByTime(1001);
    events.length = 0;
    store.set('fresh', 'f');
    expect(events.length).toBeGreaterThan(0);
    expect(events.length).toBeLessThan(51);
    expect(events.every(([, , reason]) => reason === 'expire')).toBe(true);
    for (let i = 0; i < 50; i++) expect(store.get(`k${i}`)).toBeUndefined();
    expect(events.length).toBe(51);
    expect(store.size).toBe(1);
    expect(store.bytes).toBe(1);
  });

  it('expires correctly with many distinct per-entry ttls', () => {
    useClock();
    const { store } = make('ttl', { ttl: 1000, maxEntries: 100 });
    for (let i = 0; i < 20; i++) store.set(`k${i}`, `v${i}`, (20 - i) * 100);
    vi.advanceTimersByTime(1050);
    for (let i = 0; i < 20; i++) {
      expect(store.get(`k${i}`)).toBe(i < 10 ? `v${i}` : undefined);
    }
  });

  it('evicts by bytes, soonest expiry first', () => {
    useClock();
    const { store, events } = make('ttl', { ttl: 1000, maxBytes: 10, sizeOf });
    store.set('a', 'aaaa', 5000);
    store.set('b', 'bbbb');
    store.set('c', 'cccc');
    expect(events).toEqual([['b', 'bbbb', 'evict']]);
    expect(store.bytes).toBe(8);
  });
});
