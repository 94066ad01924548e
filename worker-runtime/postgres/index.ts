/**
 * cachebus/postgres — Postgres tables as cache entries: `entity(cache, definition)` (read-through
 * by key, batched loads, write-through), `transaction(cache, [db,] fn)` (invalidations published
 * after COMMIT: I4), and the outbox triggers that publish writes made outside the app. Needs `pg`
 * (an optional peer dependency of cachebus). Attaches to a cache from outside; the core cache
 * never imports this folder.
 * Invariants here: I4 (publish after truth: held until COMMIT, dropped on ROLLBACK, published
 * anyway when the COMMIT outcome is unknown) and canonical keys (a row's cache key from its value as
 * Postgres stores it).
 * The folder's map: ../README.md.
 */
export { entity, transaction } from './postgres.js';
export { EntityHandle, type Row, type RowShape, type Id } from './entity.js';
export { Transaction, type TransactionDb, type TransactionOptions } from './transaction.js';
export type { Entity, EntityDefinition } from '../../bus/entities.js';
export type { PgInput } from '../../bus/pg.js';
export { installTriggers, uninstallTriggers, installOutbox, OUTBOX_CHANNEL, type TriggerOptions, type InstalledTriggers } from '../../bus/outbox/triggers.js';
