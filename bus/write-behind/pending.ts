import type { Entity } from '../entities.js';
import { InvalidValueError } from '../errors.js';

// The overlay's value format, apart from codec.ts so that every cache can read pending rows (I6)
// without loading pg: the core entry (cachebus) reads the overlay, only writers encode rows.

/** A pending row as stored in the overlay: its version, its definition and the row's JSON (without the version). */
export interface PendingRow {
  readonly id: string;
  /** Decimal string (a bigint may pass 2^53 one day; it is never parsed into a float here). */
  readonly version: string;
  /** Hash of the entity definition the row was written with ('' or absent: rows stored before definitions were versioned). */
  readonly def?: string;
  /** JSON object of the key and the columns, in the column order of its definition. */
  readonly json: string;
}

/**
 * Parses an overlay value `<version>:<definition hash>:<json>` (or the older `<version>:<json>`).
 * Throws InvalidValueError for anything else.
 */
export function parsePending(id: string, stored: string): PendingRow {
  const i = stored.indexOf(':');
  if (i <= 0) throw new InvalidValueError(`malformed overlay entry for id ${JSON.stringify(id)}`);
  if (stored.charCodeAt(i + 1) === 0x7b /* { */) return { id, version: stored.slice(0, i), def: '', json: stored.slice(i + 1) };
  const j = stored.indexOf(':', i + 1);
  if (j < 0) throw new InvalidValueError(`malformed overlay entry for id ${JSON.stringify(id)}`);
  return { id, version: stored.slice(0, i), def: stored.slice(i + 1, j), json: stored.slice(j + 1) };
}

/** The overlay value of a row. */
export function formatPending(version: string, def: string, json: string): string {
  return def === '' ? `${version}:${json}` : `${version}:${def}:${json}`;
}

/** The row object of a pending row, with its version column set. */
export function pendingToRow(e: Entity, p: PendingRow): Record<string, unknown> {
  const row = JSON.parse(p.json) as Record<string, unknown>;
  if (e.version !== undefined) row[e.version] = p.version; // a string, as `pg` returns bigint
  return row;
}
