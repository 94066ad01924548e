import type { Entity } from '../entities.js';
import { InvalidValueError, UnknownEntityError } from '../errors.js';

/** A pending row as stored in the overlay: its version and the row's JSON (without the version). */
export interface PendingRow {
  readonly id: string;
  /** Decimal string (a bigint may pass 2^53 one day; it is never parsed into a float here). */
  readonly version: string;
  /** JSON object of the key and the columns, in the entity's column order. */
  readonly json: string;
}

/** Parses an overlay value `<version>:<json>`. */
export function parsePending(id: string, stored: string): PendingRow {
  const i = stored.indexOf(':');
  if (i <= 0) throw new InvalidValueError(`malformed overlay entry for id ${JSON.stringify(id)}`);
  return { id, version: stored.slice(0, i), json: stored.slice(i + 1) };
}

/** The row object of a pending row, with its version column set. */
export function pendingToRow(e: Entity, p: PendingRow): Record<string, unknown> {
  const row = JSON.parse(p.json) as Record<string, unknown>;
  if (e.version !== undefined) row[e.version] = p.version; // a string, as `pg` returns bigint
  return row;
}

/** The JSON object Postgres receives (json_populate_recordset): the row with its version first. */
export function pendingToJson(e: Entity, p: PendingRow): string {
  const rest = p.json.length > 2 ? `,${p.json.slice(1)}` : '}';
  return `{"${e.version!}":${p.version}${rest}`;
}

/**
 * Serializes a row for the overlay: the key and every registered column, in order (a column left
 * out becomes null: a write-behind write replaces the whole row). Unknown columns are refused;
 * a version given by the caller is ignored (cachebus assigns it).
 */
export function encodeRow(e: Entity, row: Record<string, unknown>): { id: string; json: string } {
  if (row === null || typeof row !== 'object') throw new InvalidValueError(`${e.name}: a row must be an object`);
  const keyValue = row[e.key];
  if (keyValue === undefined || keyValue === null || (typeof keyValue !== 'string' && typeof keyValue !== 'number')) {
    throw new InvalidValueError(`${e.name}: the row has no ${e.key} (a string or a number)`);
  }
  for (const c of Object.keys(row)) {
    if (c !== e.key && c !== e.version && !e.columns.includes(c)) {
      throw new UnknownEntityError(`unknown column ${JSON.stringify(c)} for entity ${e.name}`);
    }
  }
  const out: Record<string, unknown> = { [e.key]: keyValue };
  for (const c of e.columns) out[c] = row[c] === undefined ? null : row[c];
  let json: string;
  try {
    json = JSON.stringify(out);
  } catch (err) {
    throw new InvalidValueError(`${e.name}: the row cannot be serialized to JSON (${(err as Error).message})`, { cause: err });
  }
  return { id: String(keyValue), json };
}

/** One row Postgres refused, kept in the dead-letter list with the reason. */
export interface DeadLetter {
  readonly entity: string;
  readonly id: string;
  readonly version: string;
  /** The row JSON as it was pending (without the version). */
  readonly row: string;
  /** Postgres SQLSTATE (e.g. 23514 check_violation), or '' when unknown. */
  readonly code: string;
  readonly reason: string;
  /** ms since the epoch. */
  readonly at: number;
}

export function encodeDeadLetter(d: DeadLetter): string {
  return JSON.stringify(d);
}

/** Parses a stored record; undefined when it is not one (never throws). */
export function decodeDeadLetter(raw: string): DeadLetter | undefined {
  try {
    const d = JSON.parse(raw) as Partial<DeadLetter>;
    if (typeof d.entity !== 'string' || typeof d.id !== 'string' || typeof d.version !== 'string' || typeof d.row !== 'string') return undefined;
    if (!/^\d+$/.test(d.version)) return undefined;
    return { entity: d.entity, id: d.id, version: d.version, row: d.row, code: String(d.code ?? ''), reason: String(d.reason ?? ''), at: Number(d.at ?? 0) };
  } catch {
    return undefined;
  }
}
