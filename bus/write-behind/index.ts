/** Write-behind, bus side: what the worker runtime, the sidecar and the CLI use. */
export { WriteBehindWriter, kWriterDefaults, resolveWriterOptions, type WriterOptions, type WriterStats } from './writer.js';
export { TickQueue, type TickData } from './ticks.js';
export { Flusher, type FlusherEvents, type FlusherStats } from './flusher.js';
export { kFlusherDefaults, resolveFlusherOptions, type FlusherOptions } from './flusher-options.js';
export { createFlusherService, type FlusherService } from './service.js';
export type { FlushInfo, DeadInfo, RetryInfo } from './entity-flusher.js';
export { listDeadLetters, countDeadLetters, retryDeadLetters, purgeDeadLetters, type ListedDeadLetter, type RetryResult } from './dead-letters.js';
export { checkDurability, warnIfNotDurable, DURABILITY_WARNING, type DurabilityProblems } from './durability.js';
export { publishDefinition, readDefinitions } from './registry.js';
export { makeUpsert, conflictClause, UPSERT_METHODS, type UpsertMethod, type Upsert } from './upsert.js';
export { parsePending, pendingToRow, encodeRow, decodeDeadLetter, type PendingRow, type DeadLetter } from './codec.js';
export { classifyPgError, type PgErrorKind } from './pg-errors.js';
