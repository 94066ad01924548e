/**
 * The local store behind a cache: one eviction policy, bounded by entries and/or bytes, with
 * optional TTL. Every operation is O(1) (amortised). Implementations must not throw on
 * `get`/`peek`/`delete`/`clear`.
 */
export type EvictReason = 'evict' | 'expire';

export interface StoreOptions<V> {
  /** Most entries kept; 0 or undefined for no entry bound. */
  readonly maxEntries?: number | undefined;
  /** Most bytes kept, as measured by `sizeOf`; 0 or undefined for no byte bound. */
  readonly maxBytes?: number | undefined;
  /** Size of one entry in bytes; required when `maxBytes` is set. */
  readonly sizeOf?: ((value: V, key: string) => number) | undefined;
  /** Default time to live in ms; 0 or undefined for none. */
  readonly ttl?: number | undefined;
  /**
   * Called when the policy removes an entry by itself: `evict` for capacity, `expire` for TTL.
   * Not called for `delete`, `clear` or overwrite by `set`.
   */
  readonly onEvict?: ((key: string, value: V, reason: EvictReason) => void) | undefined;
}

export interface LocalStore<V> {
  /** The value, recording the access for the policy; undefined when absent or expired. */
  get(key: string): V | undefined;
  /** The value without recording an access; undefined when absent or expired. */
  peek(key: string): V | undefined;
  /**
   * Stores a value (`ttl` in ms overrides the default for this entry). Returns false, storing
   * nothing, when the entry alone is larger than maxBytes.
   */
  set(key: string, value: V, ttl?: number): boolean;
  delete(key: string): boolean;
  clear(): void;
  /** Live keys (expired entries may or may not be listed). */
  keys(): IterableIterator<string>;
  readonly size: number;
  /** Bytes held, as measured by sizeOf; 0 when no sizeOf is set. */
  readonly bytes: number;
}

export type PolicyName = 'lru' | 'lfu' | 'fifo' | 'ttl';
