/**
 * cachebus/piscina — a cache per worker thread of a piscina pool (`threadCache`,
 * `createCachePool`, `threadStats`). Needs `piscina` (an optional peer dependency of cachebus).
 *
 * No invariant of its own: each thread's cache keeps them (threads never share entries).
 * The folder's map: ../README.md.
 */
export {
  threadCache, onThreadClose, createCachePool, threadStats, closeCachePool, type PiscinaOptions, type ThreadCacheStats,
} from './piscina.js';
