import { positive, requireSizeOf } from './fifo.js';
import type { EvictReason, LocalStore, StoreOptions } from './types.js';

interface Entry<V> {
  readonly key: string;
  value: V;
  /** Bytes charged for the entry (0 without sizeOf). */
  size: number;
  /** Date.now() after which the entry is expired; 0 for never. */
  expiresAt: number;
  bucket: Bucket<V>;
  prev: Entry<V> | null;
  next: Entry<V> | null;
}

/** All entries read `freq` times, least recently used at the head. */
interface Bucket<V> {
  readonly freq: number;
  head: Entry<V> | null;
  tail: Entry<V> | null;
  prev: Bucket<V> | null;
  next: Bucket<V> | null;
}

/**
 * LFU store, O(1) per operation (Shah, Mitra & Matani, "An O(1) algorithm for implementing
 * the LFU cache eviction scheme", 2010): a list of frequency buckets in ascending order, each
 * a doubly-linked list of its entries from least to most recently used. `get` and overwriting
 * `set` move an entry to the next bucket (freq + 1), created next to its own when missing;
 * `peek` does not count. The victim is the head of the lowest bucket: the least frequently
 * used, ties broken by least recently used. A new entry (freq 1) is never its own victim,
 * so a set always admits. Expired entries are dropped lazily on get/peek, or when chosen as
 * the capacity victim (reported as `expire` then).
 */
export function createLfuStore<V extends {}>(opts: StoreOptions<V>): LocalStore<V> {
  requireSizeOf(opts);
  const { sizeOf, onEvict } = opts;
  const maxEntries = positive(opts.maxEntries);
  const maxBytes = positive(opts.maxBytes);
  const ttl = positive(opts.ttl);
  const map = new Map<string, Entry<V>>();
  /** The lowest-frequency bucket; buckets are removed as soon as they empty. */
  let first: Bucket<V> | null = null;
  let bytes = 0;

  const isExpired = (e: Entry<V>, now: number) => e.expiresAt !== 0 && now > e.expiresAt;

  /** A new empty bucket linked after `prev` (at the front when null). */
  function addBucket(freq: number, prev: Bucket<V> | null): Bucket<V> {
    const next = prev ? prev.next : first;
    const b: Bucket<V> = { freq, head: null, tail: null, prev, next };
    if (prev) prev.next = b;
    else first = b;
    if (next) next.prev = b;
    return b;
  }

  function append(b: Bucket<V>, e: Entry<V>): void {
    e.bucket = b;
    e.prev = b.tail;
    e.next = null;
    if (b.tail) b.tail.next = e;
    else b.head = e;
    b.tail = e;
  }

  /** Unlinks `e` from its bucket, removing the bucket if that empties it. */
  function unlink(e: Entry<V>): void {
    const b = e.bucket;
    if (e.prev) e.prev.next = e.next;
    else b.head = e.next;
    if (e.next) e.next.prev = e.prev;
    else b.tail = e.prev;
    e.prev = e.next = null;
    if (b.head === null) {
      if (b.prev) b.prev.next = b.next;
      else first = b.next;
      if (b.next) b.next.prev = b.prev;
    }
  }

  /** Counts one access: moves `e` to the tail of the freq + 1 bucket. */
  function touch(e: Entry<V>): void {
    const b = e.bucket;
    const next = b.next !== null && b.next.freq === b.freq + 1 ? b.next : addBucket(b.freq + 1, b);
    unlink(e);
    append(next, e);
  }

  function remove(e: Entry<V>): void {
    map.delete(e.key);
    unlink(e);
    bytes -= e.size;
  }

  function drop(e: Entry<V>, reason: EvictReason): void {
    remove(e);
    onEvict?.(e.key, e.value, reason);
  }

  function read(key: string, count: boolean): V | undefined {
    const e = map.get(key);
    if (e === undefined) return undefined;
    if (e.expiresAt !== 0 && Date.now() > e.expiresAt) {
      drop(e, 'expire');
      return undefined;
    }
    if (count) touch(e);
    return e.value;
  }

  /** The least frequently (then least recently) used entry other than `keep`. */
  function victim(keep: Entry<V>): Entry<V> | null {
    if (first === null) return null;
    const e = first.head!;
    if (e !== keep) return e;
    return e.next ?? first.next?.head ?? null;
  }

  function trim(keep: Entry<V>, now: number): void {
    while ((maxEntries && map.size > maxEntries) || (maxBytes && bytes > maxBytes)) {
      const e = victim(keep);
      if (e === null) break;
      drop(e, isExpired(e, now) ? 'expire' : 'evict');
    }
  }

  return {
    get: (key) => read(key, true),
    peek: (key) => read(key, false),
    set(key, value, entryTtl) {
      const size = sizeOf ? sizeOf(value, key) : 0;
      let e = map.get(key);
      if (maxBytes && size > maxBytes) {
        if (e) remove(e);
        return false;
      }
      const now = Date.now();
      const life = entryTtl !== undefined && entryTtl > 0 ? entryTtl : ttl;
      const expiresAt = life ? now + life : 0;
      const cost = sizeOf ? Math.max(1, size) : 0;
      if (e) {
        bytes += cost - e.size;
        e.value = value;
        e.size = cost;
        e.expiresAt = expiresAt;
        touch(e);
      } else {
        const b = first !== null && first.freq === 1 ? first : addBucket(1, null);
        e = { key, value, size: cost, expiresAt, bucket: b, prev: null, next: null };
        map.set(key, e);
        append(b, e);
        bytes += cost;
      }
      trim(e, now);
      return true;
    },
    delete(key) {
      const e = map.get(key);
      if (e === undefined) return false;
      remove(e);
      return true;
    },
    clear() {
      map.clear();
      first = null;
      bytes = 0;
    },
    *keys() {
      const now = Date.now();
      for (const e of map.values()) if (!isExpired(e, now)) yield e.key;
    },
    get size() { return map.size; },
    get bytes() { return bytes; },
  };
}
