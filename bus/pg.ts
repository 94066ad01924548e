import pg from 'pg';

/** What a caller may pass as Postgres: a `pg.Pool` (not closed by cachebus) or a connection string. */
export type PgInput = pg.Pool | string;

export interface PgHandle {
  readonly pool: pg.Pool;
  readonly owned: boolean;
}

export function openPg(input: PgInput | undefined, max = 4): PgHandle {
  if (input instanceof pg.Pool) return { pool: input, owned: false };
  const connectionString = input ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const pool = new pg.Pool({ connectionString, max });
  pool.on('error', () => undefined); // idle-client errors surface on the next query
  return { pool, owned: true };
}

export async function closePg(h: PgHandle): Promise<void> {
  if (h.owned) await h.pool.end();
}
