import type { DependencyGraph } from './dependencies.js';
import type { Duration, Logger } from './options.js';

/** A value, or a promise of it: `get` answers a local hit synchronously; `await` works on both. */
export type Awaitable<T> = T | Promise<T>;
/**
 * Loads a missing value. `undefined` means "nothing to cache" (returned, not stored); any other
 * value, `null` included, is stored: `null` caches "there is no such thing" until the key is
 * invalidated like any other value.
 */
export type Loader<V> = () => Awaitable<V | undefined>;
/** What a cache can hold: anything but `undefined` (`null` included). */
export type Cacheable = {} | null;

export interface EntryOptions {
  /** Tags of the entry; `invalidateTags` drops every entry carrying one of them. */
  readonly tags?: readonly string[];
  /** Time to live of this entry: ms, or a string such as `'30s'`, `'1h'` (overrides options.ttl). */
  readonly ttl?: Duration;
  /** Longest this entry's loader may take (overrides options.timeout); see LoadTimeoutError. */
  readonly timeout?: Duration;
  /**
   * Keys this value is derived from: invalidating any of them (here or in any worker) drops this
   * entry too, transitively, and discards its load if it is still in flight (docs/dependencies.md).
   */
  readonly dependsOn?: readonly string[];
}

/**
 * The part of a Cache that batch, transaction and entity code call through the public API. A
 * structural view, so that scope.ts and the capabilities need not import cache.ts (no circle).
 */
export interface CacheView<V extends Cacheable> {
  readonly namespace: string;
  readonly dependencies: DependencyGraph;
  readonly logger: Logger | undefined;
  get<T extends V = V>(key: string, loader: Loader<T>, options?: EntryOptions): Awaitable<T | undefined>;
  invalidate(...keys: string[]): Promise<void>;
}
