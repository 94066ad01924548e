import type pg from 'pg';
import { quoteTable } from '../entities.js';
import { InvalidOptionError } from '../errors.js';

/**
 * What one outbox row stands for (column `kind`; rows written by older triggers have none and
 * are keys): a cache key, a tag, or a clear of the whole namespace (its `key` is ignored).
 */
export type OutboxKind = 'k' | 'g' | 'c';

/** Default outbox table name. */
export const DEFAULT_OUTBOX = 'cachebus_outbox';
/** NOTIFY channel the triggers signal on (payload: the namespace); relays LISTEN to it. */
export const OUTBOX_CHANNEL = 'cachebus_outbox';

/** The quoted outbox table of an option (`true`: the default table, resolved by search_path). */
export function outboxTableOf(option: boolean | string, what = 'options.outbox'): string {
  if (option === true) return quoteTable(DEFAULT_OUTBOX);
  if (typeof option !== 'string' || option === '') {
    throw new InvalidOptionError(`${what} must be true or an outbox table name (got ${JSON.stringify(option)})`);
  }
  return quoteTable(option);
}

export interface OutboxInvalidation {
  readonly keys: readonly string[];
  readonly tags: readonly string[];
  readonly clear: boolean;
}

/**
 * Writes an invalidation into the outbox on `client` (inside the caller's transaction): one row
 * per key and tag, one row for a clear. Resolves with the row ids. One statement.
 */
export async function recordInOutbox(client: pg.ClientBase, table: string, namespace: string, inv: OutboxInvalidation): Promise<string[]> {
  const keys: string[] = [];
  const kinds: OutboxKind[] = [];
  for (const k of inv.keys) { keys.push(k); kinds.push('k'); }
  for (const g of inv.tags) { keys.push(g); kinds.push('g'); }
  if (inv.clear) { keys.push('*'); kinds.push('c'); }
  if (keys.length === 0) return [];
  const res = await client.query<{ id: string }>(
    `INSERT INTO ${table} (namespace, key, kind) SELECT $1, u.k, u.kind FROM unnest($2::text[], $3::text[]) AS u(k, kind) RETURNING id`,
    [namespace, keys, kinds],
  );
  return res.rows.map((r) => r.id);
}

/** Deletes outbox rows already published (best effort: the relay publishing them again is harmless). */
export async function forgetOutboxRows(client: pg.ClientBase, table: string, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await client.query(`DELETE FROM ${table} WHERE id = ANY($1::bigint[])`, [ids]);
}
