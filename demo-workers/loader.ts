import type pg from 'pg';
import type { Product } from './protocol.js';

/** The read-through loader of every cache in the demo: the row's version, from PostgreSQL. */
export function productLoader(pool: pg.Pool, table: string): (id: number) => Promise<Product | undefined> {
  const text = `SELECT version FROM ${table} WHERE id = $1`;
  return async (id) => {
    const r = await pool.query<{ version: string }>(text, [id]);
    const row = r.rows[0];
    return row === undefined ? undefined : { v: Number(row.version) };
  };
}
