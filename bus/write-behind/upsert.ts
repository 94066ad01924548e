import type pg from 'pg';
import type { Entity } from '../entities.js';
import { InvalidOptionError } from '../errors.js';
import { pendingToJson, type PendingRow } from './codec.js';
import { copyIn, copyValue } from './copy-in.js';

/**
 * How the flusher sends a batch to Postgres. All four end in the same guarded statement,
 * `INSERT … ON CONFLICT (key) DO UPDATE … WHERE cur.version < EXCLUDED.version`, so a replayed
 * or reordered batch never overwrites a newer row. Measured in bench/write-behind.ts:
 * - `json`: one parameter, `json_populate_recordset(NULL::table, $1)`; Postgres converts each
 *   value to its column type (jsonb, arrays and timestamps included). The default.
 * - `unnest`: one typed array per column (types read once from the catalog).
 * - `values`: multi-row `VALUES ($1, $2, …), …`, a named prepared statement per batch size.
 * - `copy`: `COPY` into a session temp table, then `INSERT … SELECT` from it.
 */
export type UpsertMethod = 'json' | 'unnest' | 'values' | 'copy';
export const UPSERT_METHODS: readonly UpsertMethod[] = ['json', 'unnest', 'values', 'copy'];

/** Writes a batch (ids unique within it); resolves with the number of rows inserted or updated. */
export type Upsert = (pool: pg.Pool, rows: readonly PendingRow[]) => Promise<number>;

function columnsOf(e: Entity): { names: string[]; quoted: string[] } {
  if (e.version === undefined || e.sql.version === undefined) {
    throw new InvalidOptionError(`entity ${e.name}: write-behind needs a version column (definition.version)`);
  }
  return { names: [e.key, e.version, ...e.columns], quoted: [e.sql.key, e.sql.version, ...e.sql.columns] };
}

/** `ON CONFLICT … DO UPDATE … WHERE cur.version < EXCLUDED.version` for the entity. */
export function conflictClause(e: Entity): string {
  const { quoted } = columnsOf(e);
  const sets = quoted.slice(1).map((c) => `${c} = EXCLUDED.${c}`).join(', ');
  return `ON CONFLICT (${e.sql.key}) DO UPDATE SET ${sets} WHERE cur.${e.sql.version!} < EXCLUDED.${e.sql.version!}`;
}

function insertHead(e: Entity): string {
  return `INSERT INTO ${e.sql.table} AS cur (${columnsOf(e).quoted.join(', ')})`;
}

function valuesOf(e: Entity, rows: readonly PendingRow[]): unknown[][] {
  const { names } = columnsOf(e);
  return rows.map((r) => {
    const o = JSON.parse(r.json) as Record<string, unknown>;
    o[e.version!] = r.version;
    return names.map((n) => o[n] ?? null);
  });
}

const TYPE_RE = /^[A-Za-z0-9_ ."(),[\]]+$/;

/** Column types from the catalog (for `unnest`), validated before they reach SQL. */
async function columnTypes(pool: pg.Pool, e: Entity): Promise<string[]> {
  const res = await pool.query<{ attname: string; type: string }>(
    'SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped',
    [e.sql.table],
  );
  const byName = new Map(res.rows.map((r) => [r.attname, r.type]));
  return columnsOf(e).names.map((n) => {
    const t = byName.get(n);
    if (t === undefined || !TYPE_RE.test(t)) throw new InvalidOptionError(`entity ${e.name}: column ${n} not found in ${e.table}`);
    return t;
  });
}

/** The upsert function of one entity for one method. */
export function makeUpsert(e: Entity, method: UpsertMethod): Upsert {
  const head = insertHead(e);
  const conflict = conflictClause(e);
  const cols = columnsOf(e).quoted.join(', ');
  switch (method) {
    case 'json': {
      const text = `${head} SELECT ${cols} FROM json_populate_recordset(NULL::${e.sql.table}, $1) ${conflict}`;
      const name = `cbwb_json_${e.name}`.slice(0, 63);
      return async (pool, rows) => {
        const json = `[${rows.map((r) => pendingToJson(e, r)).join(',')}]`;
        return (await pool.query({ name, text, values: [json] })).rowCount ?? 0;
      };
    }
    case 'unnest': {
      let text: Promise<string> | undefined;
      return async (pool, rows) => {
        text ??= columnTypes(pool, e).then((types) => {
          const arrays = types.map((t, i) => `$${i + 1}::${t}[]`).join(', ');
          return `${head} SELECT * FROM unnest(${arrays}) ${conflict}`;
        });
        text.catch(() => { text = undefined; });
        const values = valuesOf(e, rows);
        const columns = columnsOf(e).names.map((_, i) => values.map((v) => {
          const x = v[i];
          return x !== null && typeof x === 'object' ? JSON.stringify(x) : x;
        }));
        return (await pool.query({ text: await text, values: columns })).rowCount ?? 0;
      };
    }
    case 'values': {
      const width = columnsOf(e).names.length;
      return async (pool, rows) => {
        const tuples = rows.map((_, r) => `(${Array.from({ length: width }, (_, c) => `$${r * width + c + 1}`).join(', ')})`);
        const text = `${head} VALUES ${tuples.join(', ')} ${conflict}`;
        const name = `cbwb_values_${rows.length}_${e.name}`.slice(0, 63);
        return (await pool.query({ name, text, values: valuesOf(e, rows).flat() })).rowCount ?? 0;
      };
    }
    case 'copy': {
      const stage = `"${`cbwb_stage_${e.name}`.slice(0, 63)}"`;
      const ready = new WeakSet<pg.ClientBase>();
      return async (pool, rows) => {
        const client = await pool.connect();
        let broken: unknown;
        try {
          if (!ready.has(client)) {
            await client.query(`CREATE TEMP TABLE IF NOT EXISTS ${stage} (LIKE ${e.sql.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`);
            ready.add(client);
          }
          const data = valuesOf(e, rows).map((v) => v.map(copyValue).join('\t')).join('\n') + '\n';
          await client.query('BEGIN');
          try {
            await copyIn(client, `COPY ${stage} (${cols}) FROM STDIN`, data);
            const n = (await client.query(`${head} SELECT ${cols} FROM ${stage} ${conflict}`)).rowCount ?? 0;
            await client.query('COMMIT');
            return n;
          } catch (err) {
            await client.query('ROLLBACK').catch((e2: unknown) => { broken = e2; });
            throw err;
          }
        } catch (err) {
          broken ??= (err as { code?: string }).code === undefined ? err : undefined;
          throw err;
        } finally {
          client.release(broken instanceof Error ? broken : undefined);
        }
      };
    }
    default:
      throw new InvalidOptionError(`options.upsertMethod must be one of ${UPSERT_METHODS.join(', ')} (got ${String(method)})`);
  }
}
