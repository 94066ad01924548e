import type pg from 'pg';
import { closePg, openPg, type PgHandle, type PgInput } from '../../bus/pg.js';
import type { CacheCore } from '../scope.js';

const handles = new WeakMap<object, PgHandle>();

/**
 * The cache's Postgres pool (options.pg), opened on first use and closed with the cache when
 * cachebus opened it (a pool passed in is left to its owner).
 */
export function poolOf<V extends {} | null>(core: CacheCore<V>, input: PgInput | undefined): pg.Pool {
  let h = handles.get(core);
  if (h === undefined) {
    const opened = openPg(input);
    handles.set(core, opened);
    core.onClose(() => closePg(opened));
    h = opened;
  }
  return h.pool;
}
