/**
 * cachebus/piscina — a cache per worker thread of a piscina pool (`threadCache`,
 * `createCachePool`, `threadStats`). Needs `piscina` (an optional peer dependency of cachebus).
 * What lives here and which invariants: README.md.
 */
export {
  threadCache, onThreadClose, createCachePool, threadStats, closeCachePool, type PiscinaOptions, type ThreadCacheStats,
} from './piscina.js';
