import type { RedisClient } from '../connection.js';
import { quoteIdent } from '../entities.js';
import { writeBehindKeys, writeBehindShared, type BusKeys } from '../keys.js';
import { decodeDeadLetter, type DeadLetter } from './codec.js';
import { retryScript } from './lua-retry.js';

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

export interface RetryResult {
  /** Rows pending again, with their original version (the flusher writes them next). */
  requeued: number;
  /** Dead letters dropped because a newer write of the same row is pending. */
  superseded: number;
  /** Records that are not dead letters, or another client retried them first; left as they were. */
  skipped: number;
}

/**
 * Puts dead letters back in the write-behind queue, each with its ORIGINAL version: once the
 * cause is fixed (a constraint relaxed, a column widened) the flusher writes them, and the
 * version guard still lets any newer stored row win. A row refused again returns to the list.
 */
export async function retryDeadLetters(
  client: RedisClient,
  keys: BusKeys,
  filter: (d: DeadLetter) => boolean = () => true,
  limit = 10_000,
): Promise<RetryResult> {
  const out: RetryResult = { requeued: 0, superseded: 0, skipped: 0 };
  const dead = writeBehindShared(keys).dead;
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
    const k = writeBehindKeys(keys, letter.entity);
    const r = await retryScript.run<number>(client, [dead, k.overlay, k.dirty], [raw, letter.id, letter.version, letter.row]);
    if (r === 1) out.requeued++;
    else if (r === 0) out.superseded++;
    else out.skipped++;
  }
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
