import pg from 'pg';
import { InvalidOptionError } from './errors.js';
import type { PgInput } from './pg-input.js';

export type { PgInput, PgPoolLike } from './pg-input.js';

export interface PgHandle {
  readonly pool: pg.Pool;
  readonly owned: boolean;
}

/**
 * A `pg.Pool`, recognised by its shape, never by `instanceof`: a pool built by another copy of
 * `pg` (two versions in node_modules, a bundler) is a different class. A pool hands out clients
 * (`connect`) and counts them; a client (`pg.Client`, a checked-out `PoolClient`) does not count.
 */
export function isPgPool(x: unknown): x is pg.Pool {
  if (x === null || typeof x !== 'object') return false;
  const p = x as Record<string, unknown>;
  return typeof p.connect === 'function' && typeof p.query === 'function' && typeof p.end === 'function' &&
    typeof p.totalCount === 'number' && typeof p.idleCount === 'number' && typeof p.release !== 'function';
}

export function openPg(input: PgInput | undefined, max = 4): PgHandle {
  if (isPgPool(input)) return { pool: input, owned: false };
  if (input !== undefined && typeof input !== 'string') {
    throw new InvalidOptionError('the Postgres option (pg) must be a pg.Pool or a connection string');
  }
  const connectionString = input ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const pool = new pg.Pool({ connectionString, max });
  pool.on('error', () => undefined); // idle-client errors surface on the next query
  return { pool, owned: true };
}

export async function closePg(h: PgHandle): Promise<void> {
  if (h.owned) await h.pool.end();
}

/** A client checked out of a pool, guarded against 'error' events until it is released. */
export interface Checkout {
  readonly client: pg.PoolClient;
  /** The connection failed while checked out ('error' event): it must not go back to the pool. */
  readonly error: Error | undefined;
  /** Returns the client; destroys it when `err` is set or the connection failed. Idempotent. */
  release(err?: Error): void;
}

/**
 * Checks a client out of `pool` with an 'error' listener attached for as long as it is out.
 * A checked-out client has no listener of the pool's any more: when Postgres terminates its
 * backend (pg_terminate_backend, a restart, a cut connection) while no query is running on it,
 * the client emits 'error', and with no listener that kills the process. The listener records
 * the error instead; the next query on the client fails, and release() destroys it.
 */
export async function checkout(pool: pg.Pool): Promise<Checkout> {
  const client = await pool.connect();
  let error: Error | undefined;
  let released = false;
  const onError = (err: Error): void => { error ??= err; };
  client.on('error', onError);
  return {
    client,
    get error() { return error; },
    release(err?: Error): void {
      if (released) return;
      released = true;
      const broken = err ?? error;
      // Keep a listener: an 'error' emitted late (after release, while the pool destroys the
      // client) must not crash the process either.
      client.off('error', onError);
      if (broken !== undefined) client.on('error', () => undefined);
      client.release(broken);
    },
  };
}
