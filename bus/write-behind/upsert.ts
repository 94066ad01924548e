import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { Entity } from '../entities.js';
import { InvalidOptionError } from '../errors.js';
import { pgText, type PendingRow } from './codec.js';
import { copyIn, copyValue } from './copy-in.js';

/**
 * How the flusher sends a batch to Postgres. All four end in the same guarded statement,
 * `INSERT … ON CONFLICT (key) DO UPDATE … WHERE cur.version IS NULL OR cur.version <
 * EXCLUDED.version`, so a replayed or reordered batch never overwrites a newer row. All four
 * send every value as the text `pg` sends for it in a write-through query (codec.ts `pgText`),
 * and Postgres parses it with the column type's input function (a cast to the column's type
 * without its modifier, then the INSERT's assignment applies the modifier exactly as for a
 * write-through parameter), so write-behind stores what write-through stores, for every type.
 * Measured in bench/write-behind.ts:
 * - `json`: one parameter, `json_to_recordset($1)` of text columns, each cast. The default.
 * - `unnest`: one text array per column, each element cast.
 * - `values`: multi-row `VALUES ($1::type, …), …`, a named prepared statement per batch size.
 * - `copy`: `COPY` (text format) into a session temp table, then `INSERT … SELECT` from it.
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

/** `ON CONFLICT … DO UPDATE … WHERE cur.version IS NULL OR cur.version < EXCLUDED.version` for the entity. */
export function conflictClause(e: Entity): string {
  const { quoted } = columnsOf(e);
  const sets = quoted.slice(1).map((c) => `${c} = EXCLUDED.${c}`).join(', ');
  const v = e.sql.version!;
  // A NULL stored version (a nullable column, a row written by other means) is older than any write.
  return `ON CONFLICT (${e.sql.key}) DO UPDATE SET ${sets} WHERE cur.${v} IS NULL OR cur.${v} < EXCLUDED.${v}`;
}

function insertHead(e: Entity): string {
  return `INSERT INTO ${e.sql.table} AS cur (${columnsOf(e).quoted.join(', ')})`;
}

/** Each row as the texts pg would bind for it, in column order (key, version, columns). */
function textsOf(e: Entity, rows: readonly PendingRow[]): (string | null)[][] {
  const { names } = columnsOf(e);
  return rows.map((r) => {
    const o = JSON.parse(r.json) as Record<string, unknown>;
    return names.map((n, i) => (i === 1 ? r.version : pgText(o[n])));
  });
}

/** true when `text` is a JSON document other than `null` (JSON null would become SQL NULL in json_to_recordset). */
function isJsonText(text: string): boolean {
  try {
    return JSON.parse(text) !== null;
  } catch {
    return false;
  }
}

const TYPE_RE = /^[A-Za-z0-9_ ."[\]]+$/;

/**
 * Column types from the catalog, without their modifiers (`character varying`, `numeric`,
 * `text[]`), validated before they reach SQL. A value is cast to this type and the INSERT then
 * applies the column's modifier, as it does for a write-through parameter.
 */
async function columnTypes(pool: pg.Pool, e: Entity): Promise<string[]> {
  const res = await pool.query<{ attname: string; type: string }>(
    'SELECT attname, format_type(atttypid, NULL) AS type FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped',
    [e.sql.table],
  );
  const byName = new Map(res.rows.map((r) => [r.attname, r.type]));
  return columnsOf(e).names.map((n) => {
    const t = byName.get(n);
    if (t === undefined) throw new InvalidOptionError(`entity ${e.name}: column ${n} not found in ${e.table}`);
    if (!TYPE_RE.test(t)) throw new InvalidOptionError(`entity ${e.name}: column ${n} has a type cachebus cannot name (${t})`);
    return t;
  });
}

/** The upsert function of one entity definition for one method. */
export function makeUpsert(e: Entity, method: UpsertMethod): Upsert {
  const head = insertHead(e);
  const conflict = conflictClause(e);
  const cols = columnsOf(e).quoted.join(', ');
  const width = columnsOf(e).names.length;
  const tag = `${e.hash}_${e.name}`;
  // Types are read once per definition; any failure reads them again (a column type changed).
  let types: Promise<string[]> | undefined;
  const typesOf = (pool: pg.Pool): Promise<string[]> => {
    types ??= columnTypes(pool, e);
    types.catch(() => { types = undefined; });
    return types;
  };
  const guard = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code !== 'string' || code.startsWith('42')) types = undefined;
      throw err;
    }
  };
  const casts = (t: string[], alias: string): string => t.map((ty, i) => `${alias}.c${i}::${ty}`).join(', ');
  switch (method) {
    case 'json': {
      // jsonb values that are JSON already (objects, valid JSON text) ride in the document as
      // JSON (no escaping, no second parse); a batch with a jsonb text that is not JSON, or JSON
      // null text, uses the all-text statement, whose cast refuses or keeps it as write-through does.
      const names = columnsOf(e).names;
      let fast: string | undefined;
      let slow: string | undefined;
      let forTypes: string[] | undefined;
      return (pool, rows) => guard(async () => {
        const t = await typesOf(pool);
        if (forTypes !== t) [fast, slow, forTypes] = [undefined, undefined, t]; // column types read again
        const jb = t.map((ty) => ty === 'jsonb');
        let raw = true;
        const json = `[${rows.map((r) => {
          const o = JSON.parse(r.json) as Record<string, unknown>;
          return `{${names.map((n, i) => {
            if (i === 1) return `"c1":"${r.version}"`;
            const v = o[n];
            if (jb[i] && v !== null && v !== undefined) {
              if (typeof v === 'object' && !Array.isArray(v)) return `"c${i}":${JSON.stringify(v)}`;
              const text = pgText(v)!;
              if (isJsonText(text)) return `"c${i}":${text}`;
              raw = false;
            }
            const x = pgText(v);
            return `"c${i}":${x === null ? 'null' : JSON.stringify(x)}`;
          }).join(',')}}`;
        }).join(',')}]`;
        let text: string;
        if (raw) {
          text = fast ??= `${head} SELECT ${t.map((ty, i) => (jb[i] ? `x.c${i}` : `x.c${i}::${ty}`)).join(', ')} ` +
            `FROM json_to_recordset($1::json) AS x(${t.map((ty, i) => `c${i} ${jb[i] ? 'jsonb' : 'text'}`).join(', ')}) ${conflict}`;
        } else {
          text = slow ??= `${head} SELECT ${casts(t, 'x')} FROM json_to_recordset($1::json) AS x(${t.map((_, i) => `c${i} text`).join(', ')}) ${conflict}`;
        }
        const name = `cbwb_json_${createHash('sha1').update(text).digest('hex').slice(0, 12)}_${tag}`.slice(0, 63);
        return (await pool.query({ name, text, values: [json] })).rowCount ?? 0;
      });
    }
    case 'unnest': {
      return (pool, rows) => guard(async () => {
        const t = await typesOf(pool);
        const text = `${head} SELECT ${casts(t, 'u')} FROM unnest(${t.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS u(${t.map((_, i) => `c${i}`).join(', ')}) ${conflict}`;
        const values = textsOf(e, rows);
        const columns = Array.from({ length: width }, (_, i) => values.map((v) => v[i]));
        return (await pool.query({ text, values: columns })).rowCount ?? 0;
      });
    }
    case 'values': {
      return (pool, rows) => guard(async () => {
        const t = await typesOf(pool);
        const tuples = rows.map((_, r) => `(${t.map((ty, c) => `$${r * width + c + 1}::${ty}`).join(', ')})`);
        const text = `${head} VALUES ${tuples.join(', ')} ${conflict}`;
        const name = `cbwb_values_${rows.length}_${tag}`.slice(0, 63);
        return (await pool.query({ name, text, values: textsOf(e, rows).flat() })).rowCount ?? 0;
      });
    }
    case 'copy': {
      const stage = `"${`cbwb_stage_${tag}`.slice(0, 63)}"`;
      const ready = new WeakSet<pg.ClientBase>();
      return (pool, rows) => guard(async () => {
        const client = await pool.connect();
        let broken: unknown;
        const onError = (err: unknown): void => { broken = err; };
        client.on('error', onError); // a backend terminated while checked out must not crash the process
        try {
          if (!ready.has(client)) {
            await client.query(`CREATE TEMP TABLE IF NOT EXISTS ${stage} (LIKE ${e.sql.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`);
            ready.add(client);
          }
          const data = textsOf(e, rows).map((v) => v.map(copyValue).join('\t')).join('\n') + '\n';
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
          client.removeListener('error', onError);
          client.release(broken instanceof Error ? broken : undefined);
        }
      });
    }
    default:
      throw new InvalidOptionError(`options.upsertMethod must be one of ${UPSERT_METHODS.join(', ')} (got ${String(method)})`);
  }
}
