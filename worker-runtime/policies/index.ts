/**
 * Eviction policies of the local store (options.policy): lru (lru-cache, wrapped), lfu, fifo and
 * ttl, behind one LocalStore interface. No invariant of their own: an eviction is a local drop and
 * never publishes; the cache forgets the key's tags and edges (entries.ts onEvict).
 */
import { InvalidOptionError } from '../../bus/errors.js';
import { createFifoStore, requireSizeOf } from './fifo.js';
import { createLfuStore } from './lfu.js';
import { createLruStore } from './lru.js';
import { createTtlStore } from './ttl.js';
import type { LocalStore, PolicyName, StoreOptions } from './types.js';

export type { EvictReason, LocalStore, PolicyName, StoreOptions } from './types.js';
export { createFifoStore, createLfuStore, createLruStore, createTtlStore };

/**
 * The local store for an eviction policy: `lru` (lru-cache, the default), `lfu`, `fifo`, or
 * `ttl` (TTL-only; requires `opts.ttl`). Throws InvalidOptionError for an unknown policy or
 * invalid options.
 */
export function createStore<V extends {}>(policy: PolicyName, opts: StoreOptions<V>): LocalStore<V> {
  requireSizeOf(opts);
  switch (policy) {
    case 'lru': return createLruStore(opts);
    case 'lfu': return createLfuStore(opts);
    case 'fifo': return createFifoStore(opts);
    case 'ttl': return createTtlStore(opts);
    default: {
      const unknown: never = policy;
      throw new InvalidOptionError(`options.policy must be "lru", "lfu", "fifo" or "ttl", got ${JSON.stringify(unknown)}`);
    }
  }
}
