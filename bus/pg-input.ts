/**
 * A `pg.Pool` as cachebus recognises it (by shape, see isPgPool), declared without importing
 * `pg`: the core entry's options mention it, and a cache-only app has no `pg` (nor @types/pg)
 * installed. A real `pg.Pool` is assignable to it.
 */
export interface PgPoolLike {
  connect(): Promise<unknown>;
  query(...args: never[]): unknown;
  end(): Promise<void>;
  readonly totalCount: number;
  readonly idleCount: number;
}

/** What a caller may pass as Postgres: a `pg.Pool` (not closed by cachebus) or a connection string. */
export type PgInput = PgPoolLike | string;
