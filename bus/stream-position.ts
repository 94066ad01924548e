import type { RedisClient } from './connection.js';
import { streamInfoScript } from './lua-stream-info.js';
import { compareStreamIds, ZERO_ID } from './stream-id.js';

/** Why the reader could not prove it saw every entry since its cursor. */
export type GapCause = 'trimmed' | 'missing' | 'reset' | 'restart';

/** The stream as the stream-info script (bus/lua-stream-info.ts) sees it. */
export interface StreamInfo {
  readonly length: number;
  readonly lastId: string;
  readonly maxDeletedId: string;
  readonly entriesAdded: number;
  /** The stream's epoch (bus/lua-append.ts); undefined when nothing chained was ever published. */
  readonly epoch: string | undefined;
  /** The last chained entry published (the epoch group's last-delivered-id). */
  readonly head: string | undefined;
}

/** Where a reader stands in the stream. */
export interface Position {
  readonly cursor: string;
  /** entries-added value that matches the cursor when no entry was missed; undefined after a per-entry gap, until re-synced. */
  readonly counted: number | undefined;
  /** The epoch of the chained entries followed (undefined: none seen yet). */
  readonly epoch: string | undefined;
  /** The last chained entry applied (or known of at the last sync). */
  readonly head: string;
}

/** What the stream's counters say about a position: a gap, an exact count again, or nothing. */
export type Verdict =
  | { readonly gap: GapCause; readonly detail: string }
  | { readonly gap?: undefined; readonly counted: number }
  | undefined;

/**
 * The stream as the script sees it. `pipelined`: sent right before an XREAD BLOCK, so no EVAL
 * fallback (it would run after the read and describe the stream after it): an unknown script
 * fails, and the caller re-syncs without pipelining, which loads it.
 */
export async function readStreamInfo(conn: RedisClient, stream: string, pipelined: boolean): Promise<StreamInfo | undefined> {
  type Reply = [number, string, string, number, string, string] | null;
  const keys = [stream];
  const r = await (pipelined ? streamInfoScript.runLoaded<Reply>(conn, keys, []) : streamInfoScript.run<Reply>(conn, keys, []));
  if (r === null) return undefined;
  return {
    length: Number(r[0]), lastId: String(r[1]), maxDeletedId: String(r[2]), entriesAdded: Number(r[3]),
    epoch: r[4] ? String(r[4]) : undefined, head: r[5] ? String(r[5]) : undefined,
  };
}

/**
 * Compares the stream as the script saw it with what a reader has seen (docs/guarantees.md, I2,
 * the counting rules). Valid whenever it runs: every deletion moves `max-deleted-entry-id` and
 * the counters, whether or not a read came between.
 */
export function checkPosition(pos: Position, info: StreamInfo | undefined): Verdict {
  const { cursor: cur, counted } = pos;
  if (info === undefined) {
    if (cur !== ZERO_ID || counted !== 0 || pos.epoch !== undefined) return { gap: 'missing', detail: `stream is gone (cursor ${cur})` };
    return undefined;
  }
  const deleted = info.entriesAdded - info.length;
  if (pos.epoch !== undefined && info.epoch !== pos.epoch) {
    return { gap: 'reset', detail: `stream epoch is ${info.epoch ?? 'gone'}, reader followed ${pos.epoch} (the stream was re-created)` };
  }
  if (counted !== undefined && info.entriesAdded < counted) {
    return { gap: 'reset', detail: `stream reports ${info.entriesAdded} entries added, reader counted ${counted}` };
  }
  if ((counted !== undefined && deleted > counted) || compareStreamIds(info.maxDeletedId, cur) > 0) {
    return { gap: 'trimmed', detail: `entries after cursor ${cur} were deleted unread` };
  }
  if (compareStreamIds(info.lastId, cur) < 0) return { gap: 'reset', detail: `stream end ${info.lastId} is behind cursor ${cur}` };
  if (counted !== undefined && info.lastId === cur && info.entriesAdded !== counted) {
    return { gap: 'reset', detail: `stream reports ${info.entriesAdded} entries added, reader counted ${counted}` };
  }
  if (info.head !== undefined && info.head !== pos.head && compareStreamIds(info.head, cur) <= 0) {
    return { gap: 'trimmed', detail: `chained entry ${info.head} was deleted before this reader read it (cursor ${cur})` };
  }
  if (counted === undefined && info.lastId === cur) return { counted: info.entriesAdded }; // caught up: counting is exact again
  return undefined;
}

/** The fields a reader needs before decoding: origin and the chain fields (both p and e, or neither). */
export function peekFields(fields: unknown): { o: string | undefined; p: string | undefined; e: string | undefined } {
  let o: unknown, p: unknown, e: unknown;
  if (Array.isArray(fields)) {
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name: unknown = fields[i];
      if (name === 'o') o = fields[i + 1];
      else if (name === 'p') p = fields[i + 1];
      else if (name === 'e') e = fields[i + 1];
    }
  }
  const chained = typeof p === 'string' && typeof e === 'string';
  return { o: typeof o === 'string' ? o : undefined, p: chained ? p as string : undefined, e: chained ? e as string : undefined };
}
