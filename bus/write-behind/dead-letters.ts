import type pg from 'pg';
import type { RedisClient } from '../connection.js';
import { defineEntity, quoteIdent, type Entity, type EntityDefinition } from '../entities.js';
import { writeBehindKeys, writeBehindShared, type BusKeys } from '../keys.js';
import { decodeDeadLetter, type DeadLetter } from './codec.js';
import { retryScript } from './lua-retry.js';
import { readDefinition } from './registry.js';

/** A dead letter as listed: the record, its raw form (for retry/removal) and its list index. */
export interface ListedDeadLetter {
  readonly raw: string;
  /** undefined when the stored record is not a valid dead letter (it is still listed). */
  readonly letter: DeadLetter | undefined;
}

/** The rows Postgres refused, oldest first (at most `limit`). */
export async function listDeadLetters(client: RedisClient, keys: BusKeys, limit = 1000): Promise<ListedDeadLetter[]> {
  const raw = await client.lrange(writeBehindShared(keys).dead, 0, limit - 1);
  return raw.map((r) => ({ raw: r, letter: decodeDeadLetter(r) }));
}

export async function countDeadLetters(client: RedisClient, keys: BusKeys): Promise<number> {
  return client.llen(writeBehindShared(keys).dead);
}

/** Dead letters the bound (`maxDeadLetters`) dropped so far, oldest first. */
export async function droppedDeadLetters(client: RedisClient, keys: BusKeys): Promise<number> {
  return Number(await client.get(writeBehindShared(keys).deadDropped) ?? 0);
}

export interface RetryResult {
  /** Rows pending again, with their original version (the flusher writes them next). */
  requeued: number;
  /** Dead letters dropped because a newer version of the row is pending or already in Postgres. */
  superseded: number;
  /** Records that are not dead letters, or another client retried them first; left as they were. */
  skipped: number;
}

export interface RetryOptions {
  /** Postgres: a dead letter whose row Postgres already holds in the same or a newer version is dropped, not requeued. */
  readonly pg?: pg.Pool | pg.ClientBase;
  /** Called with the cache keys of the requeued rows (publish an invalidation: readers then see the pending row). */
  readonly invalidate?: (keys: string[]) => Promise<unknown>;
}

/** The definition of a dead letter's row: its own (by hash), else the entity's newest. */
async function definitionOf(client: RedisClient, keys: BusKeys, d: DeadLetter): Promise<Entity | undefined> {
  const shared = writeBehindShared(keys);
  if (d.def) {
    const e = await readDefinition(client, shared.defs, d.entity, d.def).catch(() => undefined);
    if (e !== undefined) return e;
  }
  const json = await client.hget(shared.entities, d.entity);
  if (json === null) return undefined;
  try {
    return defineEntity(JSON.parse(json) as EntityDefinition);
  } catch {
    return undefined;
  }
}

/** The version Postgres holds for the row (undefined: no row, or a NULL version). */
async function storedVersion(db: pg.Pool | pg.ClientBase, e: Entity, id: string): Promise<bigint | undefined> {
  const s = e.sql;
  const res = await db.query<{ v: string | null }>(`SELECT ${s.version!}::text AS v FROM ${s.table} WHERE ${s.key} = $1`, [id]);
  const v = res.rows[0]?.v;
  return v === undefined || v === null ? undefined : BigInt(v);
}

/**
 * Puts dead letters back in the write-behind queue, each with its ORIGINAL version: once the
 * cause is fixed (a constraint relaxed, a column widened) the flusher writes them, and the
 * version guard still lets any newer stored row win. A dead letter whose row is pending in a
 * newer version, or (with `options.pg`) already in Postgres in the same or a newer version, is
 * dropped as superseded: it is never made visible to readers again. The cache keys of the rows
 * requeued go to `options.invalidate`. A row refused again returns to the list.
 */
export async function retryDeadLetters(
  client: RedisClient,
  keys: BusKeys,
  filter: (d: DeadLetter) => boolean = () => true,
  limit = 10_000,
  options: RetryOptions = {},
): Promise<RetryResult> {
  const out: RetryResult = { requeued: 0, superseded: 0, skipped: 0 };
  const dead = writeBehindShared(keys).dead;
  const requeued: string[] = [];
  for (const { raw, letter } of await listDeadLetters(client, keys, limit)) {
    if (letter === undefined) {
      out.skipped++;
      continue;
    }
    if (!filter(letter)) continue;
    try {
      quoteIdent(letter.entity, 'entity name');
    } catch {
      out.skipped++;
      continue;
    }
    if (options.pg !== undefined) {
      const e = await definitionOf(client, keys, letter);
      if (e === undefined || e.version === undefined) {
        out.skipped++; // no definition: cannot compare versions, leave it
        continue;
      }
      const stored = await storedVersion(options.pg, e, letter.id);
      if (stored !== undefined && stored >= BigInt(letter.version)) {
        out.superseded += await client.lrem(dead, 1, raw) > 0 ? 1 : 0;
        continue;
      }
    }
    const k = writeBehindKeys(keys, letter.entity);
    const r = await retryScript.run<number>(client, [dead, k.overlay, k.dirty], [raw, letter.id, letter.version, letter.row, letter.def ?? '']);
    if (r === 1) {
      out.requeued++;
      requeued.push(`${letter.entity}:${letter.id}`);
    } else if (r === 0) out.superseded++;
    else out.skipped++;
  }
  if (requeued.length > 0) await options.invalidate?.(requeued);
  return out;
}

/** Removes dead letters for good (after they were handled by hand). Returns how many. */
export async function purgeDeadLetters(client: RedisClient, keys: BusKeys, filter: (d: DeadLetter | undefined) => boolean = () => true): Promise<number> {
  const dead = writeBehindShared(keys).dead;
  let n = 0;
  for (const { raw, letter } of await listDeadLetters(client, keys, 100_000)) {
    if (filter(letter)) n += await client.lrem(dead, 1, raw);
  }
  return n;
}
