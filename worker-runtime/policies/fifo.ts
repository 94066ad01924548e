import { InvalidOptionError } from '../../bus/errors.js';
import type { EvictReason, LocalStore, StoreOptions } from './types.js';

/** Expired heads dropped per `set`, so expiry costs O(1) per write however many are due. */
const SWEEP = 8;

/** A node of an intrusive doubly-linked list. */
export interface Linked<N> {
  prev: N | null;
  next: N | null;
}

/**
 * Intrusive doubly-linked queue: O(1) push to the tail and O(1) unlink of any node.
 * (A Map's insertion order is not a usable queue in V8: `map.keys().next()` walks over the
 * holes left by deleted heads until the next rehash, so popping the head is O(n) amortised.)
 * @internal Shared by the FIFO and TTL policies.
 */
export class Queue<N extends Linked<N>> {
  head: N | null = null;
  tail: N | null = null;

  push(node: N): void {
    node.prev = this.tail;
    node.next = null;
    if (this.tail) this.tail.next = node;
    else this.head = node;
    this.tail = node;
  }

  remove(node: N): void {
    if (node.prev) node.prev.next = node.next;
    else this.head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.tail = node.prev;
    node.prev = node.next = null;
  }

  clear(): void {
    this.head = this.tail = null;
  }
}

interface Entry<V> extends Linked<Entry<V>> {
  readonly key: string;
  value: V;
  /** Bytes charged for the entry (0 without sizeOf). */
  size: number;
  /** Date.now() after which the entry is expired; 0 for never. */
  expiresAt: number;
}

/** `n` when it is a positive number, else 0 (no bound). */
export function positive(n: number | undefined): number {
  return n !== undefined && n > 0 ? n : 0;
}

/** @internal Throws when `maxBytes` is set without a `sizeOf` to measure entries with. */
export function requireSizeOf<V>(opts: StoreOptions<V>): void {
  if (positive(opts.maxBytes) && typeof opts.sizeOf !== 'function') {
    throw new InvalidOptionError('options.sizeOf is required when options.maxBytes is set');
  }
}

/**
 * FIFO store: evicts in insertion order. Reads never reorder; overwriting a key with `set`
 * keeps its place (and renews its TTL); delete-then-set moves it to the back. Expired entries
 * are dropped lazily on get/peek, from the queue head on set (a bounded number per set), or
 * when chosen as the capacity victim (reported as `expire` then).
 */
export function createFifoStore<V extends {}>(opts: StoreOptions<V>): LocalStore<V> {
  requireSizeOf(opts);
  const { sizeOf, onEvict } = opts;
  const maxEntries = positive(opts.maxEntries);
  const maxBytes = positive(opts.maxBytes);
  const ttl = positive(opts.ttl);
  const map = new Map<string, Entry<V>>();
  const queue = new Queue<Entry<V>>();
  let bytes = 0;

  const isExpired = (e: Entry<V>, now: number) => e.expiresAt !== 0 && now > e.expiresAt;

  function remove(e: Entry<V>): void {
    map.delete(e.key);
    queue.remove(e);
    bytes -= e.size;
  }

  function drop(e: Entry<V>, reason: EvictReason): void {
    remove(e);
    onEvict?.(e.key, e.value, reason);
  }

  function read(key: string): V | undefined {
    const e = map.get(key);
    if (e === undefined) return undefined;
    if (e.expiresAt !== 0 && Date.now() > e.expiresAt) {
      drop(e, 'expire');
      return undefined;
    }
    return e.value;
  }

  /** Drops expired heads, then the oldest entries while over a bound; never `keep`. */
  function trim(keep: Entry<V>, now: number): void {
    for (let i = 0; i < SWEEP; i++) {
      const head = queue.head === keep ? keep.next : queue.head;
      if (head === null || !isExpired(head, now)) break;
      drop(head, 'expire');
    }
    while ((maxEntries && map.size > maxEntries) || (maxBytes && bytes > maxBytes)) {
      const victim = queue.head === keep ? keep.next : queue.head;
      if (victim === null) break;
      drop(victim, isExpired(victim, now) ? 'expire' : 'evict');
    }
  }

  return {
    get: read,
    peek: read,
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
      } else {
        e = { key, value, size: cost, expiresAt, prev: null, next: null };
        map.set(key, e);
        queue.push(e);
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
      queue.clear();
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
