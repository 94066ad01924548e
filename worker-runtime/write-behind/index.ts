/**
 * cachebus/write-behind — `writeBehind(cache, definition)`: writes acknowledged once durable in
 * Redis, flushed to Postgres later by the Flusher (embedded, or the sidecar). Needs `bullmq` and
 * `pg` (optional peer dependencies of cachebus). The read side (the pending overlay every cache
 * reads first, I6) is in the core (../overlay.ts).
 * Invariants here: I4 (the write script makes the row durable and appends its invalidation in one
 * step) and I5 (no lost write: the flusher's versioned upserts, compare-and-delete, dead letters).
 * The folder's map: ../README.md.
 */
export {
  writeBehind, writeBehindOf, WriteBehindEntity, type WriteBehindOptions, type WriteResult,
} from './write-behind.js';
export {
  Flusher, createFlusherService, kFlusherDefaults, kWriterDefaults, DURABILITY_WARNING,
  type FlusherOptions, type FlusherEvents, type FlusherStats, type FlusherService, type FlushInfo,
  type DeadInfo, type RetryInfo, type UpsertMethod, type DeadLetter,
} from '../../bus/write-behind/index.js';
