import type { Cache } from './cache.js';

/**
 * @internal Run at the end of `Cache.open()` by every cache with a bus, in order. Write-behind
 * registers its pending-overlay reader here, so caches that never called writeBehind() read the
 * overlay too. A hook may return what to run at close. A module of its own, so that cache.ts
 * does not import write-behind (no import circle).
 */
export const cacheOpenHooks: ((cache: Cache<{}>) => Promise<(() => Promise<void>) | void>)[] = [];
