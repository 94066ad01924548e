import pg from 'pg';
import type { Entity } from '../entities.js';
import { InvalidValueError, UnknownEntityError } from '../errors.js';

export { parsePending, formatPending, pendingToRow, type PendingRow } from './pending.js';

const prepareValue = (pg as unknown as { utils: { prepareValue(v: unknown): unknown } }).utils.prepareValue;

/**
 * The text `pg` sends for a value (what a write-through query binds), or null. Applied by the
 * flusher to the JSON-parsed overlay values; `encodeRow` has already turned every value JSON
 * cannot hold into its text, so this is exactly the text write-through sends.
 */
export function pgText(v: unknown): string | null {
  const p = prepareValue(v);
  if (p === null || p === undefined) return null;
  return Buffer.isBuffer(p) ? `\\x${p.toString('hex')}` : String(p);
}

/**
 * One value as the overlay keeps it: JSON-native values as they are; every value JSON cannot
 * hold exactly is replaced by the text `pg` would send for it (so the flush stores what a
 * write-through stores): NaN/±Infinity → 'NaN'/'Infinity'/'-Infinity', bigint → decimal,
 * Buffer / typed array → bytea hex `\x…`, Date → pg's timestamp text, `toPostgres()` objects → their
 * text. Arrays are walked (pg turns them into array literals element by element). Functions and
 * symbols are refused.
 */
function normalise(e: Entity, column: string, v: unknown): unknown {
  switch (typeof v) {
    case 'undefined': return null;
    case 'string': case 'boolean': return v;
    case 'number': return Number.isFinite(v) ? v : String(v);
    case 'bigint': return v.toString();
    case 'object': {
      if (v === null) return null;
      if (ArrayBuffer.isView(v)) return pgText(v);
      if (v instanceof Date) {
        if (Number.isNaN(v.getTime())) throw new InvalidValueError(`${e.name}.${column}: an invalid Date cannot be written`);
        return pgText(v);
      }
      if (Array.isArray(v)) return v.map((x) => normalise(e, column, x));
      if (typeof (v as { toPostgres?: unknown }).toPostgres === 'function') {
        try {
          return pgText(v);
        } catch (err) {
          throw new InvalidValueError(`${e.name}.${column}: toPostgres() failed (${(err as Error).message})`, { cause: err });
        }
      }
      return v; // a plain object: JSON text, exactly as pg sends it (JSON.stringify)
    }
    default:
      throw new InvalidValueError(`${e.name}.${column}: a ${typeof v} cannot be written to Postgres`);
  }
}

/**
 * Serializes a row for the overlay: the key and every registered column, in order (a column left
 * out becomes null: a write-behind write replaces the whole row). Unknown columns and values that
 * cannot be stored exactly as write-through stores them are refused (nothing is written); a
 * version given by the caller is ignored (cachebus assigns it).
 */
export function encodeRow(e: Entity, row: Record<string, unknown>): { id: string; json: string } {
  if (row === null || typeof row !== 'object') throw new InvalidValueError(`${e.name}: a row must be an object`);
  const keyValue = row[e.key];
  if (keyValue === undefined || keyValue === null || (typeof keyValue !== 'string' && typeof keyValue !== 'number')) {
    throw new InvalidValueError(`${e.name}: the row has no ${e.key} (a string or a number)`);
  }
  if (typeof keyValue === 'number' && !Number.isFinite(keyValue)) throw new InvalidValueError(`${e.name}: ${e.key} must be finite`);
  if (keyValue === '') throw new InvalidValueError(`${e.name}: ${e.key} must not be empty`);
  for (const c of Object.keys(row)) {
    if (c !== e.key && c !== e.version && !e.columns.includes(c)) {
      throw new UnknownEntityError(`unknown column ${JSON.stringify(c)} for entity ${e.name}`);
    }
  }
  const out: Record<string, unknown> = { [e.key]: keyValue };
  for (const c of e.columns) out[c] = normalise(e, c, row[c]);
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
  /** Hash of the definition the row was written with ('' when unknown). */
  readonly def?: string;
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
    const def = typeof d.def === 'string' && /^[0-9a-f]{0,16}$/.test(d.def) ? d.def : '';
    return { entity: d.entity, id: d.id, version: d.version, def, row: d.row, code: String(d.code ?? ''), reason: String(d.reason ?? ''), at: Number(d.at ?? 0) };
  } catch {
    return undefined;
  }
}
