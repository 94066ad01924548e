import type pg from 'pg';
import { defineEntity, quoteIdent, type Entity, type EntityDefinition } from '../entities.js';
import { InvalidOptionError } from '../errors.js';
import { assertNamespace } from '../keys.js';

/** NOTIFY channel the triggers signal on (payload: the namespace); relays LISTEN to it. */
export const OUTBOX_CHANNEL = 'cachebus_outbox';
/** Default outbox table name. */
export const DEFAULT_OUTBOX = 'cachebus_outbox';

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
}

type Db = pg.Pool | pg.ClientBase;

const literal = (s: string): string => `'${s.replace(/'/g, "''")}'`;

async function resolve(db: Db, entity: Entity, outbox: string | undefined): Promise<{ schema: string; table: string; outbox: string; fn: string }> {
  const [tSchema, tName] = entity.table.includes('.') ? entity.table.split('.') as [string, string] : [undefined, entity.table];
  const schema = tSchema ?? String((await db.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]?.s);
  if (!schema || schema === 'null') throw new InvalidOptionError('no current schema: qualify the table as schema.table');
  const out = outbox ?? DEFAULT_OUTBOX;
  const parts = out.split('.');
  if (parts.length > 2) throw new InvalidOptionError(`outbox table ${JSON.stringify(out)} must be "table" or "schema.table"`);
  const outQ = parts.length === 2 ? parts.map((p) => quoteIdent(p, 'outbox table')).join('.') : `${quoteIdent(schema, 'schema')}.${quoteIdent(out, 'outbox table')}`;
  const fn = `${quoteIdent(schema, 'schema')}.${quoteIdent(`cachebus_outbox_${tName}`.slice(0, 63), 'function')}`;
  return { schema, table: entity.sql.table.includes('.') ? entity.sql.table : `${quoteIdent(schema, 'schema')}.${entity.sql.table}`, outbox: outQ, fn };
}

/** SQL creating the outbox table (idempotent). `outbox` is a quoted, qualified name. */
export function outboxTableSql(outbox: string): string {
  const indexName = quoteIdent(`${outbox.split('.').pop()!.replace(/"/g, '')}_ns_id`.slice(0, 63), 'index');
  return `CREATE TABLE IF NOT EXISTS ${outbox} (
  id bigserial PRIMARY KEY,
  namespace text NOT NULL,
  key text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS ${indexName} ON ${outbox} (namespace, id);`;
}

/**
 * Installs (or replaces) statement-level triggers on the entity's table that record the cache
 * key (`<entity>:<primary key>`) of every inserted, updated or deleted row in the outbox table,
 * in the same transaction as the change, then NOTIFY the relays; a row-level trigger adds the
 * old key when an UPDATE changes a primary key. Tunes autovacuum of the outbox (a queue table:
 * every row is deleted soon after it is written). Idempotent.
 *
 * @example
 * await installTriggers(pool, { name: 'products', key: 'id', columns: [] }, { namespace: 'shop' });
 */
export async function installTriggers(db: Db, def: Entity | EntityDefinition, opts: TriggerOptions): Promise<InstalledTriggers> {
  assertNamespace(opts.namespace);
  const e = 'sql' in def ? def : defineEntity(def);
  const r = await resolve(db, e, opts.outbox);
  const ns = literal(opts.namespace);
  const keyOf = (alias: string): string => `${literal(`${e.name}:`)} || ${alias}.${e.sql.key}::text`;
  const body = `
BEGIN
  IF TG_LEVEL = 'ROW' THEN -- UPDATE that changed the primary key: the old key goes too
    INSERT INTO ${r.outbox} (namespace, key) VALUES (${ns}, ${literal(`${e.name}:`)} || OLD.${e.sql.key}::text);
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
  const triggers = ['cachebus_outbox_ins', 'cachebus_outbox_upd', 'cachebus_outbox_del', 'cachebus_outbox_key'];
  const sql = `
${outboxTableSql(r.outbox)}
CREATE OR REPLACE FUNCTION ${r.fn}() RETURNS trigger LANGUAGE plpgsql AS $cachebus$
DECLARE cachebus_rows bigint;
${body}
$cachebus$;
DROP TRIGGER IF EXISTS cachebus_outbox_ins ON ${r.table};
DROP TRIGGER IF EXISTS cachebus_outbox_upd ON ${r.table};
DROP TRIGGER IF EXISTS cachebus_outbox_del ON ${r.table};
DROP TRIGGER IF EXISTS cachebus_outbox_key ON ${r.table};
CREATE TRIGGER cachebus_outbox_ins AFTER INSERT ON ${r.table}
  REFERENCING NEW TABLE AS cachebus_new FOR EACH STATEMENT EXECUTE FUNCTION ${r.fn}();
CREATE TRIGGER cachebus_outbox_upd AFTER UPDATE ON ${r.table}
  REFERENCING OLD TABLE AS cachebus_old NEW TABLE AS cachebus_new FOR EACH STATEMENT EXECUTE FUNCTION ${r.fn}();
CREATE TRIGGER cachebus_outbox_del AFTER DELETE ON ${r.table}
  REFERENCING OLD TABLE AS cachebus_old FOR EACH STATEMENT EXECUTE FUNCTION ${r.fn}();
CREATE TRIGGER cachebus_outbox_key AFTER UPDATE OF ${e.sql.key} ON ${r.table}
  FOR EACH ROW WHEN (OLD.${e.sql.key} IS DISTINCT FROM NEW.${e.sql.key}) EXECUTE FUNCTION ${r.fn}();
ALTER TABLE ${r.outbox} SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);`;
  // One simple-protocol query: its statements run as one implicit transaction (all or nothing).
  await db.query(sql);
  return { outbox: r.outbox, function: r.fn, triggers };
}

/** Removes the triggers and their function (the outbox table and its rows stay). */
export async function uninstallTriggers(db: Db, def: Entity | EntityDefinition, opts: Pick<TriggerOptions, 'outbox'> = {}): Promise<void> {
  const e = 'sql' in def ? def : defineEntity(def);
  const r = await resolve(db, e, opts.outbox);
  await db.query(`DROP TRIGGER IF EXISTS cachebus_outbox_ins ON ${r.table};
DROP TRIGGER IF EXISTS cachebus_outbox_upd ON ${r.table};
DROP TRIGGER IF EXISTS cachebus_outbox_del ON ${r.table};
DROP TRIGGER IF EXISTS cachebus_outbox_key ON ${r.table};
DROP FUNCTION IF EXISTS ${r.fn}();`);
}
