import { InvalidValueError } from './errors.js';

/**
 * How the primary key of an entity is canonicalised, from its column's Postgres type. The cache
 * key of a row is `<entity>:<key as Postgres prints it>` (what the outbox trigger records), so a
 * key given as `'007'` for an integer column, or an upper-case uuid, must be rewritten to that
 * form before it names a cache entry; otherwise it caches under one key and is invalidated
 * under another.
 */
export type KeyKind = 'integer' | 'uuid' | 'numeric' | 'text' | 'bpchar' | 'other';

/** The kind of a key column from its `format_type` (e.g. `integer`, `character varying(20)`). */
export function keyKindOf(pgType: string): KeyKind {
  const t = pgType.toLowerCase().replace(/\(.*\)$/, '').trim();
  if (t === 'smallint' || t === 'integer' || t === 'bigint') return 'integer';
  if (t === 'uuid') return 'uuid';
  if (t === 'numeric') return 'numeric';
  if (t === 'text' || t === 'character varying' || t === 'name') return 'text';
  if (t === 'character') return 'bpchar';
  return 'other';
}

/**
 * SQL printing a key column the canonical way (the trigger's side of `canonicalKey`): numeric
 * without trailing fractional zeros (`7.0` and `7` are one key), everything else `::text`.
 */
export function keySql(kind: KeyKind, column: string): string {
  return kind === 'numeric' ? `trim_scale(${column})::text` : `${column}::text`;
}

const INT = /^\s*([+-]?)0*(\d+)\s*$/;
const UUID_HEX = /^[0-9a-f]{32}$/;
const NUM = /^\s*([+-]?)(\d*)(?:\.(\d*))?(?:e([+-]?\d+))?\s*$/i;

/**
 * The canonical text of a key value for its column kind, as Postgres prints the stored value;
 * throws InvalidValueError (before anything is sent) for a value the column could not hold.
 * `other` kinds are passed through as `String(id)`: give them in Postgres's text form.
 */
export function canonicalKey(kind: KeyKind, id: unknown, what = 'key'): string {
  if (typeof id === 'bigint') id = id.toString();
  if (typeof id === 'number') {
    if (!Number.isFinite(id)) throw new InvalidValueError(`${what} ${String(id)} is not a valid key`);
    if (kind === 'integer' && !Number.isSafeInteger(id)) throw new InvalidValueError(`${what} ${id} is not an exact integer: pass it as a string or bigint`);
    id = String(id);
  }
  if (typeof id !== 'string') throw new InvalidValueError(`${what} must be a string, number or bigint (got ${id === null ? 'null' : typeof id})`);
  switch (kind) {
    case 'integer': {
      const m = INT.exec(id);
      if (m === null) throw new InvalidValueError(`${what} ${JSON.stringify(id)} is not an integer`);
      return m[2] === '0' ? '0' : `${m[1] === '-' ? '-' : ''}${m[2]}`;
    }
    case 'uuid': {
      let h = id.trim().toLowerCase();
      if (h.startsWith('{') && h.endsWith('}')) h = h.slice(1, -1);
      h = h.replace(/-/g, '');
      if (!UUID_HEX.test(h)) throw new InvalidValueError(`${what} ${JSON.stringify(id)} is not a uuid`);
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    }
    case 'numeric': return canonicalNumeric(id, what);
    case 'bpchar': return id.replace(/ +$/, '');
    default: return id;
  }
}

/** `trim_scale(x::numeric)::text`: no exponent, no leading zeros, no trailing fractional zeros. */
function canonicalNumeric(id: string, what: string): string {
  const t = id.trim();
  if (/^nan$/i.test(t)) return 'NaN';
  if (/^[+]?inf(inity)?$/i.test(t)) return 'Infinity';
  if (/^-inf(inity)?$/i.test(t)) return '-Infinity';
  const m = NUM.exec(id);
  if (m === null || (m[2] === '' && (m[3] ?? '') === '')) throw new InvalidValueError(`${what} ${JSON.stringify(id)} is not a number`);
  let digits = (m[2] ?? '') + (m[3] ?? '');
  let point = (m[2] ?? '').length + Number(m[4] ?? 0); // digits before the decimal point
  const lead = digits.length - digits.replace(/^0+/, '').length;
  digits = digits.slice(lead);
  point -= lead;
  digits = digits.replace(/0+$/, '');
  if (digits === '') return '0';
  let int: string, frac: string;
  if (point <= 0) { int = '0'; frac = '0'.repeat(-point) + digits; }
  else if (point >= digits.length) { int = digits + '0'.repeat(point - digits.length); frac = ''; }
  else { int = digits.slice(0, point); frac = digits.slice(point); }
  return `${m[1] === '-' ? '-' : ''}${int}${frac ? `.${frac}` : ''}`;
}

/** Something that runs a query (a pool or a client). */
interface Queryable {
  query<T extends object>(text: string, values: unknown[]): Promise<{ rows: T[] }>;
}

/**
 * The key kind of `column` of `table`, read from the catalogue; `undefined` when the table or
 * the column does not exist. Warns once (CACHEBUS_KEY_TYPE) for a kind passed through as given.
 */
export async function loadKeyKind(
  db: Queryable, table: string, column: string, entity: string,
  warn: (message: string, type: string) => void = (message) => process.emitWarning(message, { code: 'CACHEBUS_KEY_TYPE' }),
): Promise<KeyKind | undefined> {
  const res = await db.query<{ t: string }>(
    `SELECT format_type(a.atttypid, a.atttypmod) AS t FROM pg_attribute a
      WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped`, [table, column]);
  const type = res.rows[0]?.t;
  if (type === undefined) return undefined;
  const kind = keyKindOf(type);
  if (kind === 'other') {
    warn(`entity ${entity}: key column type ${type} is passed through as given: use Postgres's text form of the key (as key::text prints it) in every call, or caches and invalidations may name one row differently`, type);
  }
  return kind;
}
