/**
 * How the flusher treats a Postgres error.
 * - `row`: this data can never be written (SQLSTATE class 22 data exception, 23 integrity
 *   constraint violation): the batch is bisected and the refused rows go to the dead-letter list.
 * - `retry`: everything else (connection refused or lost, class 08, 28 login refused, 53
 *   resources, 57 shutdown, 40 serialization, 42 undefined table / permission): nothing is
 *   dropped; the rows stay pending and the entity is retried with backoff.
 */
export type PgErrorKind = 'row' | 'retry';

export function sqlState(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : '';
}

export function classifyPgError(err: unknown): PgErrorKind {
  const code = sqlState(err);
  return code.startsWith('22') || code.startsWith('23') ? 'row' : 'retry';
}

export function errorMessage(err: unknown): string {
  const e = err as { message?: unknown; detail?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.detail === 'string' && e.detail !== '' ? `${msg} (${e.detail})` : msg;
}
