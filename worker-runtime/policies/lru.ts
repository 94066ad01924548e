import { LRUCache } from 'lru-cache';
import type { LocalStore, StoreOptions } from './types.js';

/**
 * LRU on lru-cache (the default policy). We wrap it rather than rewrite it: its get is the
 * floor our hit path is measured against.
 */
export function createLruStore<V extends {}>(opts: StoreOptions<V>): LocalStore<V> {
  const { maxEntries, maxBytes, sizeOf, ttl, onEvict } = opts;
  const lru = new LRUCache<string, V>({
    ...(maxEntries ? { max: maxEntries } : {}),
    ...(maxBytes ? { maxSize: maxBytes, sizeCalculation: (v: V, k: string) => Math.max(1, sizeOf!(v, k)) } : {}),
    ...(ttl ? { ttl, ttlAutopurge: false, allowStale: false, updateAgeOnGet: false } : {}),
    ...(onEvict
      ? {
          dispose: (value: V, key: string, reason: LRUCache.DisposeReason) => {
            if (reason === 'evict' || reason === 'expire') onEvict(key, value, reason);
          },
        }
      : {}),
  } as LRUCache.Options<string, V, unknown>);
  return {
    get: (key) => lru.get(key),
    peek: (key) => lru.peek(key),
    set(key, value, entryTtl) {
      if (maxBytes && sizeOf!(value, key) > maxBytes) {
        lru.delete(key);
        return false;
      }
      lru.set(key, value, entryTtl ? { ttl: entryTtl } : undefined);
      return true;
    },
    delete: (key) => lru.delete(key),
    clear: () => lru.clear(),
    keys: () => lru.keys(),
    get size() { return lru.size; },
    get bytes() { return maxBytes ? lru.calculatedSize : 0; },
  };
}
