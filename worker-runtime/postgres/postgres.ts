import type { EntityDefinition } from '../../bus/entities.js';
import { coreOf } from '../scope.js';
import type { Cache } from '../cache.js';
import type { Cacheable } from '../types.js';
import { entityOf, type EntityHandle, type Row, type RowShape } from './entity.js';
import { poolOf } from './pg-pool.js';
import { runTransaction, type Transaction, type TransactionDb, type TransactionOptions } from './transaction.js';

/**
 * Registers a Postgres table with a cache (read-through by key, batched loads, write-through)
 * and returns its handle; with a name, returns the handle of a registered entity
 * (docs/entities.md). Reads use options.pg of the cache unless a transaction is open.
 */
export function entity<R extends RowShape = Row>(cache: Cache<any>, definition: EntityDefinition | string): EntityHandle<R> {
  const core = coreOf<{}>(cache);
  return entityOf<R>(core, definition, () => poolOf(core, core.pg));
}

/**
 * Runs `fn` in a Postgres transaction on `db` (a pool, or a client not in a transaction;
 * omitted: options.pg of the cache). Invalidations made inside are published as one entry only
 * after COMMIT succeeds (I4); values read or set inside stay private to the transaction
 * (docs/transactions.md).
 */
export function transaction<V extends Cacheable, T>(
  cache: Cache<V>, fn: (tx: Transaction<V>) => Promise<T> | T, options?: TransactionOptions,
): Promise<T>;
export function transaction<V extends Cacheable, T>(
  cache: Cache<V>, db: TransactionDb, fn: (tx: Transaction<V>) => Promise<T> | T, options?: TransactionOptions,
): Promise<T>;
export function transaction<V extends Cacheable, T>(
  cache: Cache<V>,
  a: TransactionDb | ((tx: Transaction<V>) => Promise<T> | T),
  b?: ((tx: Transaction<V>) => Promise<T> | T) | TransactionOptions,
  c?: TransactionOptions,
): Promise<T> {
  const core = coreOf<V>(cache);
  core.assertOpen();
  if (typeof a === 'function') return runTransaction(core, poolOf(core, core.pg), a, b as TransactionOptions | undefined);
  return runTransaction(core, a, b as (tx: Transaction<V>) => Promise<T> | T, c);
}
