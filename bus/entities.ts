import { createHash } from 'node:crypto';
import { InvalidOptionError, UnknownEntityError } from './errors.js';

/**
 * A Postgres table registered up front. Only registered identifiers ever reach SQL, always
 * quoted; values are always parameters.
 */
export interface EntityDefinition {
  /** Entity name, used in cache keys (`<name>:<id>`) and in the API. */
  readonly name: string;
  /** Table, optionally schema-qualified (`shop.products`). @defaultValue the entity name */
  readonly table?: string;
  /** Primary-key column. @defaultValue `'id'` */
  readonly key?: string;
  /** Monotonic bigint version column; required for write-behind. @defaultValue none */
  readonly version?: string;
  /** Other columns read and written. */
  readonly columns: readonly string[];
}

/** A registered entity with its SQL identifiers already validated and quoted. */
export interface Entity {
  readonly name: string;
  readonly table: string;
  readonly key: string;
  readonly version: string | undefined;
  readonly columns: readonly string[];
  /** Quoted identifiers for SQL. */
  readonly sql: {
    readonly table: string;
    readonly key: string;
    readonly version: string | undefined;
    readonly columns: readonly string[];
  };
  /**
   * Hash of the definition (table, key, version, columns): 16 hex digits. Write-behind rows carry
   * it, so a flusher writes each row with the definition it was written with (docs/write-behind.md).
   */
  readonly hash: string;
  /** The definition as JSON (what write-behind records in Redis under `hash`). */
  readonly json: string;
  /** Cache key of one row. */
  cacheKey(id: string | number): string;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** Quotes a validated identifier; throws on anything that is not a plain SQL name. */
export function quoteIdent(name: string, what = 'identifier'): string {
  if (typeof name !== 'string' || !IDENT.test(name)) {
    throw new InvalidOptionError(`${what} ${JSON.stringify(name)} must match ${IDENT} (letters, digits, _; at most 63)`);
  }
  return `"${name}"`;
}

export function quoteTable(table: string): string {
  const parts = table.split('.');
  if (parts.length > 2) throw new InvalidOptionError(`table ${JSON.stringify(table)} must be "table" or "schema.table"`);
  return parts.map((p) => quoteIdent(p, 'table')).join('.');
}

export function defineEntity(def: EntityDefinition): Entity {
  quoteIdent(def.name, 'entity name');
  const table = def.table ?? def.name;
  const key = def.key ?? 'id';
  const columns = [...def.columns];
  if (columns.includes(key) || (def.version !== undefined && columns.includes(def.version))) {
    throw new InvalidOptionError(`entity ${def.name}: columns must not repeat the key or version column`);
  }
  const name = def.name;
  const json = JSON.stringify({ name, table, key, version: def.version, columns });
  return {
    name,
    hash: createHash('sha1').update(json).digest('hex').slice(0, 16),
    json,
    table,
    key,
    version: def.version,
    columns,
    sql: {
      table: quoteTable(table),
      key: quoteIdent(key, 'key column'),
      version: def.version === undefined ? undefined : quoteIdent(def.version, 'version column'),
      columns: columns.map((c) => quoteIdent(c, 'column')),
    },
    cacheKey: (id) => `${name}:${id}`,
  };
}

/** The entities of one cache or sidecar, by name. */
export class EntityRegistry {
  readonly #byName = new Map<string, Entity>();

  register(def: EntityDefinition): Entity {
    if (this.#byName.has(def.name)) throw new InvalidOptionError(`entity ${def.name} is already registered`);
    const e = defineEntity(def);
    this.#byName.set(e.name, e);
    return e;
  }

  /** The entity, or UnknownEntityError. */
  get(name: string): Entity {
    const e = this.#byName.get(name);
    if (e === undefined) throw new UnknownEntityError(`unknown entity ${JSON.stringify(name)}: register it first (cache.entity(...))`);
    return e;
  }

  /** Checks that every column is registered for the entity. */
  assertColumns(e: Entity, columns: Iterable<string>): void {
    for (const c of columns) {
      if (c !== e.key && c !== e.version && !e.columns.includes(c)) {
        throw new UnknownEntityError(`unknown column ${JSON.stringify(c)} for entity ${e.name}`);
      }
    }
  }

  all(): Entity[] { return [...this.#byName.values()]; }
}
