/**
 * How the flusher treats a Postgres error.
 * - `row`: this data can never be written as it is (SQLSTATE class 22 data exception, 23
 *   integrity constraint violation, and the type errors of class 42 a value or a column type
 *   change causes: 42804 datatype_mismatch, 42846 cannot_coerce, 42883 undefined_function,
 *   42P18 indeterminate_datatype): the batch is bisected and the refused rows go to the
 *   dead-letter list (a foreign-key violation whose parent row is itself pending waits instead).
 * - `retry`: everything else (connection refused or lost, class 08, 28 login refused, 53
 *   resources, 57 shutdown, 40 serialization, 42P01 undefined table, 42703 undefined column,
 *   42501 permission): nothing is dropped; the rows stay pending and the entity is retried with
 *   backoff (a migration or a grant may fix it).
 */
export type PgErrorKind = 'row' | 'retry';

const ROW_42 = new Set(['42804', '42846', '42883', '42P18']);

export function sqlState(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : '';
}

export function classifyPgError(err: unknown): PgErrorKind {
  const code = sqlState(err);
  return code.startsWith('22') || code.startsWith('23') || ROW_42.has(code) ? 'row' : 'retry';
}

/** The row a foreign-key violation (23503) found missing. */
export interface MissingParent {
  /** Referenced table, as Postgres names it in the message (unqualified). */
  readonly table: string;
  /** Referenced key columns and their values, as text. */
  readonly columns: readonly string[];
  readonly values: readonly string[];
}

/**
 * Parses the detail of an insert/update 23503: `Key (a)=(1) is not present in table "t".`
 * (a single-column key only; undefined otherwise).
 */
export function missingParent(err: unknown): MissingParent | undefined {
  if (sqlState(err) !== '23503') return undefined;
  const detail = (err as { detail?: unknown }).detail;
  if (typeof detail !== 'string') return undefined;
  const m = /^Key \(([^,()]+)\)=\((.*)\) is not present in table "(.+)"\.$/.exec(detail);
  if (m === null) return undefined;
  return { table: m[3]!, columns: [m[1]!.replace(/^"|"$/g, '')], values: [m[2]!] };
}

export function errorMessage(err: unknown): string {
  const e = err as { message?: unknown; detail?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.detail === 'string' && e.detail !== '' ? `${msg} (${e.detail})` : msg;
}
