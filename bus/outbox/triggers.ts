import { createHash } from 'node:crypto';
import type pg from 'pg';
import { defineEntity, quoteIdent, type Entity, type EntityDefinition } from '../entities.js';
import { InvalidOptionError, UnknownEntityError } from '../errors.js';
import { keyKindOf, keySql, type KeyKind } from '../key-types.js';
import { assertNamespace } from '../keys.js';
import { DEFAULT_OUTBOX, OUTBOX_CHANNEL } from './rows.js';

export { DEFAULT_OUTBOX, OUTBOX_CHANNEL };

export interface TriggerOptions {
  /** Namespace whose caches the changes invalidate. */
  readonly namespace: string;
  /**
   * Outbox table, optionally schema-qualified. Unqualified, it is created in the schema of the
   * watched table (or the session's current schema), and the trigger names it fully qualified.
   * @defaultValue `'cachebus_outbox'`
   */
  readonly outbox?: string | undefined;
}

export interface InstalledTriggers {
  /** The outbox table, quoted and schema-qualified, as the trigger writes to it. */
  readonly outbox: string;
  readonly function: string;
  readonly triggers: readonly string[];
  /** Namespaces whose triggers are on the table (this one included), sorted. */
  readonly namespaces: readonly string[];
}

type Db = pg.Pool | pg.ClientBase;

const literal = (s: string): string => `'${s.replace(/'/g, "''")}'`;

interface Resolved {
  schema: string;
  tName: string;
  table: string;
  outbox: string;
  keyKind: KeyKind;
}

async function resolve(db: Db, entity: Entity, outbox: string | undefined): Promise<Resolved> {
  const [tSchema, tName] = entity.table.includes('.') ? entity.table.split('.') as [string, string] : [undefined, entity.table];
  const schema = tSchema ?? String((await db.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]?.s);
  if (!schema || schema === 'null') throw new InvalidOptionError('no current schema: qualify the table as schema.table');
  const out = outbox ?? DEFAULT_OUTBOX;
  const parts = out.split('.');
  if (parts.length > 2) throw new InvalidOptionError(`outbox table ${JSON.stringify(out)} must be "table" or "schema.table"`);
  const outQ = parts.length === 2 ? parts.map((p) => quoteIdent(p, 'outbox table')).join('.') : `${quoteIdent(schema, 'schema')}.${quoteIdent(out, 'outbox table')}`;
  const table = entity.sql.table.includes('.') ? entity.sql.table : `${quoteIdent(schema, 'schema')}.${entity.sql.table}`;
  const col = await db.query<{ t: string }>(
    `SELECT format_type(a.atttypid, a.atttypmod) AS t FROM pg_attribute a
      WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped`, [table, entity.key]);
  const type = col.rows[0]?.t;
  if (type === undefined) throw new UnknownEntityError(`table ${table} does not exist or has no column ${JSON.stringify(entity.key)} (the key column)`);
  return { schema, tName, table, outbox: outQ, keyKind: keyKindOf(type) };
}

/**
 * Names of one namespace's triggers and function on one table: the namespace is part of them,
 * so several namespaces can watch one table (each gets its own rows in the outbox).
 */
function namesOf(r: Resolved, namespace: string): { fn: string; base: string } {
  const h = createHash('sha256').update(`${r.schema}.${r.tName}\0${namespace}`).digest('hex').slice(0, 8);
  const ns = namespace.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 20);
  return {
    fn: `${quoteIdent(r.schema, 'schema')}.${quoteIdent(`cachebus_${r.tName.slice(0, 24)}_${ns}_${h}`, 'function')}`,
    base: `cachebus_${ns}_${h}`,
  };
}

interface InstalledTrigger { trigger: string; fn: string; namespace: string | undefined }

/** The cachebus triggers on a table, with the namespace each records (read from its function). */
async function installedOn(db: Db, table: string): Promise<InstalledTrigger[]> {
  const res = await db.query<{ trigger: string; fn: string; src: string }>(
    `SELECT t.tgname AS trigger, p.prosrc AS src,
        '"' || replace(n.nspname, '"', '""') || '"."' || replace(p.proname, '"', '""') || '"' AS fn
      FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE t.tgrelid = to_regclass($1) AND NOT t.tgisinternal AND t.tgname LIKE 'cachebus\_%' ORDER BY t.tgname`, [table]);
  return res.rows.map((r) => {
    const m = /SELECT '((?:[^']|'')*)', /.exec(r.src);
    return { trigger: r.trigger, fn: r.fn, namespace: m ? m[1]!.replace(/''/g, "'") : undefined };
  });
}

/** SQL dropping triggers (and their functions once no trigger uses them). */
function dropSql(table: string, triggers: readonly InstalledTrigger[], keep = new Set<string>()): string {
  const fns = new Set(triggers.map((t) => t.fn));
  return [
    ...triggers.map((t) => `DROP TRIGGER IF EXISTS ${quoteIdent(t.trigger, 'trigger')} ON ${table};`),
    ...[...fns].filter((f) => !keep.has(f)).map((f) => `DROP FUNCTION IF EXISTS ${f}();`),
  ].join('\n');
}

/** SQL creating the outbox table (idempotent; adds the `kind` column to an older one). `outbox` is a quoted, qualified name. */
export function outboxTableSql(outbox: string): string {
  const indexName = quoteIdent(`${outbox.split('.').pop()!.replace(/"/g, '')}_ns_id`.slice(0, 63), 'index');
  return `CREATE TABLE IF NOT EXISTS ${outbox} (
  id bigserial PRIMARY KEY,
  namespace text NOT NULL,
  key text NOT NULL,
  kind text NOT NULL DEFAULT 'k',
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE ${outbox} ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'k';
CREATE INDEX IF NOT EXISTS ${indexName} ON ${outbox} (namespace, id);
ALTER TABLE ${outbox} SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);`;
}

/**
 * Creates the outbox table alone (for `cache.transaction(..., { outbox: true })` without any
 * trigger). Unqualified, in the session's current schema. Idempotent. Resolves with its name.
 */
export async function installOutbox(db: Db, opts: Pick<TriggerOptions, 'outbox'> = {}): Promise<string> {
  const out = opts.outbox ?? DEFAULT_OUTBOX;
  const parts = out.split('.');
  if (parts.length > 2) throw new InvalidOptionError(`outbox table ${JSON.stringify(out)} must be "table" or "schema.table"`);
  const q = parts.map((p) => quoteIdent(p, 'outbox table')).join('.');
  await db.query(outboxTableSql(q));
  return q;
}

/**
 * Installs (or replaces) the triggers of one namespace on the entity's table: statement-level
 * triggers record the cache key (`<entity>:<primary key>`, the key printed as Postgres stores
 * it) of every inserted, updated or deleted row in the outbox table, in the same transaction as
 * the change, then NOTIFY the relays; a row-level trigger adds the old key when an UPDATE
 * changes a primary key; TRUNCATE records a clear of the whole namespace. The triggers fire
 * under `session_replication_role = replica` too (ENABLE ALWAYS). Several namespaces may watch
 * one table: the trigger and function names include the namespace. Idempotent.
 *
 * @example
 * await installTriggers(pool, { name: 'products', key: 'id', columns: [] }, { namespace: 'shop' });
 */
export async function installTriggers(db: Db, def: Entity | EntityDefinition, opts: TriggerOptions): Promise<InstalledTriggers> {
  assertNamespace(opts.namespace);
  const e = 'sql' in def ? def : defineEntity(def);
  const r = await resolve(db, e, opts.outbox);
  const { fn, base } = namesOf(r, opts.namespace);
  const ns = literal(opts.namespace);
  const prefix = literal(`${e.name}:`);
  const keyOf = (alias: string): string => `${prefix} || ${keySql(r.keyKind, `${alias}.${e.sql.key}`)}`;
  const body = `
BEGIN
  IF TG_OP = 'TRUNCATE' THEN -- the keys are unknown: every cache of the namespace is cleared
    INSERT INTO ${r.outbox} (namespace, key, kind) SELECT ${ns}, '*', 'c';
    PERFORM pg_notify(${literal(OUTBOX_CHANNEL)}, ${ns});
    RETURN NULL;
  END IF;
  IF TG_LEVEL = 'ROW' THEN -- UPDATE that changed the primary key: the old key goes too
    INSERT INTO ${r.outbox} (namespace, key) SELECT ${ns}, ${keyOf('OLD')};
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
    INSERT INTO ${r.outbox} (namespace, key) SELECT ${ns}, ${keyOf('n')} FROM cachebus_new n;
  ELSE
    INSERT INTO ${r.outbox} (namespace, key) SELECT ${ns}, ${keyOf('o')} FROM cachebus_old o;
  END IF;
  GET DIAGNOSTICS cachebus_rows = ROW_COUNT;
  IF cachebus_rows > 0 THEN
    PERFORM pg_notify(${literal(OUTBOX_CHANNEL)}, ${ns});
  END IF;
  RETURN NULL;
END`;
  const t = { ins: `${base}_ins`, upd: `${base}_upd`, del: `${base}_del`, key: `${base}_key`, trn: `${base}_trn` };
  const triggers = Object.values(t);
  // This namespace's triggers, under any name (older versions named them cachebus_outbox_*), go.
  const mine = (await installedOn(db, r.table)).filter((x) => x.namespace === opts.namespace);
  const sql = `
${outboxTableSql(r.outbox)}
CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $cachebus$
DECLARE cachebus_rows bigint;
${body}
$cachebus$;
${dropSql(r.table, mine, new Set([fn]))}
${triggers.map((n) => `DROP TRIGGER IF EXISTS ${quoteIdent(n, 'trigger')} ON ${r.table};`).join('\n')}
CREATE TRIGGER ${t.ins} AFTER INSERT ON ${r.table}
  REFERENCING NEW TABLE AS cachebus_new FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
CREATE TRIGGER ${t.upd} AFTER UPDATE ON ${r.table}
  REFERENCING OLD TABLE AS cachebus_old NEW TABLE AS cachebus_new FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
CREATE TRIGGER ${t.del} AFTER DELETE ON ${r.table}
  REFERENCING OLD TABLE AS cachebus_old FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
CREATE TRIGGER ${t.key} AFTER UPDATE OF ${e.sql.key} ON ${r.table}
  FOR EACH ROW WHEN (OLD.${e.sql.key} IS DISTINCT FROM NEW.${e.sql.key}) EXECUTE FUNCTION ${fn}();
CREATE TRIGGER ${t.trn} AFTER TRUNCATE ON ${r.table} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
${triggers.map((n) => `ALTER TABLE ${r.table} ENABLE ALWAYS TRIGGER ${n};`).join('\n')}`;
  // One simple-protocol query: its statements run as one implicit transaction (all or nothing).
  await db.query(sql);
  // Report what is really there, not what was meant to be.
  const now = await installedOn(db, r.table);
  const found = now.filter((x) => triggers.includes(x.trigger) && x.namespace === opts.namespace).map((x) => x.trigger);
  if (found.length !== triggers.length) {
    throw new InvalidOptionError(`installing the triggers of namespace ${opts.namespace} on ${r.table} did not take effect (found ${found.join(', ') || 'none'})`);
  }
  const namespaces = [...new Set(now.map((x) => x.namespace).filter((x): x is string => x !== undefined))].sort();
  return { outbox: r.outbox, function: fn, triggers, namespaces };
}

/**
 * Removes the triggers of one namespace from the table (all cachebus triggers when `namespace`
 * is not given), and their functions. The outbox table and its rows stay. Resolves with the
 * names of the triggers removed.
 */
export async function uninstallTriggers(db: Db, def: Entity | EntityDefinition, opts: Partial<TriggerOptions> = {}): Promise<string[]> {
  if (opts.namespace !== undefined) assertNamespace(opts.namespace);
  const e = 'sql' in def ? def : defineEntity(def);
  const r = await resolve(db, e, opts.outbox);
  const all = await installedOn(db, r.table);
  const gone = opts.namespace === undefined ? all : all.filter((x) => x.namespace === opts.namespace);
  if (gone.length === 0) return [];
  // A function shared with a trigger that stays is kept.
  const keep = new Set(all.filter((x) => !gone.includes(x)).map((x) => x.fn));
  await db.query(dropSql(r.table, gone, keep));
  return gone.map((x) => x.trigger);
}
