import type pg from 'pg';
import { type Cache } from '../../worker-runtime/index.js';
import { entity } from '../../worker-runtime/postgres/index.js';
import { type EntityHandle } from '../../worker-runtime/postgres/index.js';
import { writeBehind, type WriteBehindEntity } from '../../worker-runtime/write-behind/index.js';
import { groupOf, tagOf, type ReadAnswer, type TortureWorkerConfig } from './layout.js';

export type Value = { v?: number; version?: string | number };

export const versionOf = (x: Value | undefined): number => (x === undefined ? -1 : x.v ?? (x.version === undefined ? -1 : Number(x.version)));

export interface Paths {
  readonly wb: WriteBehindEntity;
  readonly ent: EntityHandle<{ id: number; name: string; price: number; version: string }>;
  read(id: number): Promise<ReadAnswer>;
}

/**
 * Registers the write-behind and write-through entities on `cache` and returns the read of each
 * row, the way its group caches it (a worker's main thread and its piscina threads alike).
 */
export async function paths(cache: Cache<Value>, pool: pg.Pool, cfg: TortureWorkerConfig): Promise<Paths> {
  const table = `"${cfg.schema}".products`;
  const def = { table: `${cfg.schema}.products`, key: 'id', version: 'version', columns: ['name', 'price'] };
  const wb = await writeBehind(cache as Cache<{}>, { ...def, name: 'wb' }, { pg: pool });
  const ent = entity<{ id: number; name: string; price: number; version: string }>(cache as Cache, { ...def, name: 'ent' });
  const loadVersion = async (id: number): Promise<Value | undefined> => {
    const r = await pool.query<{ version: string }>(`SELECT version FROM ${table} WHERE id = $1`, [id]);
    return r.rows[0] === undefined ? undefined : { v: Number(r.rows[0].version) };
  };
  const answer = async (got: ReturnType<Cache<Value>['get']>): Promise<ReadAnswer> =>
    ({ v: versionOf(await got), h: got instanceof Promise ? 0 : 1 }); // a hit is answered synchronously
  const read = async (id: number): Promise<ReadAnswer> => {
    const key = `product:${id}`;
    switch (groupOf(id)) {
      case 'wb': return { v: versionOf(await wb.get(id) as Value | undefined), h: 0 };
      case 'entity': return { v: versionOf(await ent.get(id) as Value | undefined), h: 0 };
      case 'tags': return answer(cache.get(key, () => loadVersion(id), { tags: [tagOf(id)] }));
      case 'deps': return answer(cache.get(`summary:${id}`, () => loadVersion(id), { dependsOn: [key] }));
      default: return answer(cache.get(key, () => loadVersion(id)));
    }
  };
  return { wb, ent, read };
}
