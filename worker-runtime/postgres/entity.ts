import type pg from 'pg';
import { type Entity, type EntityDefinition, EntityRegistry } from '../../bus/entities.js';
import { InvalidOptionError, InvalidValueError, UnknownEntityError } from '../../bus/errors.js';
import { canonicalKey, loadKeyKind, type KeyKind } from '../../bus/key-types.js';
import type { CacheCore } from '../scope.js';
import { runTransaction, Transaction } from './transaction.js';
import { assertWriteThrough, upsertBehind } from '../overlay.js';

/** A row of an entity: column name to value (as `pg` returns it: bigint and numeric as strings). */
export type Row = Record<string, unknown>;
/**
 * What an entity's row type may be: any object type, an `interface` included (no index
 * signature needed). Its property names should be the registered columns.
 */
export type RowShape = object;
/** A primary-key value. */
export type Id = string | number;

/**
 * A Postgres table registered with a cache: read-through by primary key, batched loads and
 * write-through. Cached under `<name>:<id>` (`entity.cacheKey(id)`), the key the outbox trigger
 * also publishes. Only registered identifiers reach SQL (quoted); values are always parameters.
 *
 * Inside `transaction(cache, ...)` every call runs on the transaction's connection and sees its
 * uncommitted rows; outside, reads use the cache's pool and each write is its own transaction.
 */
export class EntityHandle<R extends RowShape = Row> {
  /** The registered table: name, table, key, version, columns and their quoted forms. */
  readonly entity: Entity;
  readonly #core: CacheCore<{}>;
  readonly #pool: () => pg.Pool;
  readonly #registry: EntityRegistry;
  readonly #select: string;
  /** How ids are canonicalised: from the key column's type, read from the catalogue once. */
  #kind: KeyKind | undefined;
  #kindLoad: Promise<KeyKind> | undefined;

  /** @internal use entity(cache, definition) */
  constructor(core: CacheCore<{}>, registry: EntityRegistry, entity: Entity, pool: () => pg.Pool) {
    this.#core = core;
    this.#registry = registry;
    this.entity = entity;
    this.#pool = pool;
    const s = entity.sql;
    this.#select = [s.key, ...(s.version ? [s.version] : []), ...s.columns].join(', ');
  }

  /**
   * Cache key of a row: `<name>:<id>`, the id written as Postgres prints the stored key (`'007'`
   * for an integer key is `7`, a uuid is lower case), so that every way of naming a row names
   * one cache entry, the one the outbox trigger invalidates. Needs the key column's type: after
   * `await entity.ready()` (or any read or write), else E_INVALID_OPTION.
   */
  key(id: Id): string {
    if (this.#kind === undefined) {
      throw new InvalidOptionError(`${this.entity.name}.key(): the key column's type is not known yet: await ${this.entity.name}.ready() first`);
    }
    return this.entity.cacheKey(canonicalKey(this.#kind, id, `${this.entity.name} key`));
  }

  /** Reads the key column's type from the catalogue (once); every other call does it first. */
  async ready(): Promise<this> {
    await this.#keyKind();
    return this;
  }

  /** The id as Postgres prints it (InvalidValueError for an id the key column could not hold). */
  async #canonical(id: Id): Promise<string> {
    return canonicalKey(await this.#keyKind(), id, `${this.entity.name} key`);
  }

  #keyKind(): Promise<KeyKind> {
    if (this.#kind !== undefined) return Promise.resolve(this.#kind);
    this.#kindLoad ??= (async () => {
      const s = this.entity.sql;
      const kind = await loadKeyKind(this.#tx()?.client ?? this.#pool(), s.table, this.entity.key, this.entity.name, (warning, type) => {
        const logger = this.#core.cache.logger;
        try {
          if (logger !== undefined) { logger.warn({ code: 'CACHEBUS_KEY_TYPE', entity: this.entity.name, type }, warning); return; }
        } catch { /* a throwing logger: the process warning below */ }
        process.emitWarning(warning, { code: 'CACHEBUS_KEY_TYPE' });
      });
      if (kind === undefined) throw new UnknownEntityError(`entity ${this.entity.name}: table ${s.table} does not exist or has no key column ${this.entity.key}`);
      this.#kind = kind;
      return kind;
    })().finally(() => { this.#kindLoad = undefined; });
    return this.#kindLoad;
  }

  /** The row by primary key (read-through; `undefined` when there is no such row, not cached). */
  async get(id: Id): Promise<R | undefined> {
    return (await this.getMany([id]))[0];
  }

  /**
   * Rows by primary key, in the order of `ids` (`undefined` where there is none). Local hits are
   * served from the cache; every miss is loaded by ONE `SELECT … WHERE key = ANY($1)`.
   */
  async getMany(ids: readonly Id[]): Promise<(R | undefined)[]> {
    const kind = await this.#keyKind();
    const canon = ids.map((id) => canonicalKey(kind, id, `${this.entity.name} key`)); // all valid before any effect
    const tx = this.#tx();
    const misses = new Set<string>();
    let query: Promise<Map<string, R>> | undefined;
    const loadOne = (id: string): Promise<R | undefined> => {
      misses.add(id);
      query ??= Promise.resolve().then(() => this.load([...misses], tx?.client));
      return query.then((rows) => rows.get(id));
    };
    const cache = this.#core.cache;
    return Promise.all(canon.map(async (id) => {
      const key = this.entity.cacheKey(id);
      const loader = (): Promise<R | undefined> => loadOne(id);
      return (await (tx ? tx.get(key, loader) : cache.get(key, loader))) as R | undefined;
    }));
  }

  /**
   * Loads rows straight from Postgres, bypassing the cache: one `SELECT … WHERE key = ANY($1)`.
   * Map keys are the canonical ids (as Postgres prints the key: `'007'` is found under `7`).
   */
  async load(ids: readonly Id[], db: pg.ClientBase | pg.Pool = this.#pool()): Promise<Map<string, R>> {
    const out = new Map<string, R>();
    if (ids.length === 0) return out;
    const kind = await this.#keyKind();
    const canon = ids.map((id) => canonicalKey(kind, id, `${this.entity.name} key`));
    const s = this.entity.sql;
    const res = await db.query<R>(`SELECT ${this.#select} FROM ${s.table} WHERE ${s.key} = ANY($1)`, [canon]);
    for (const row of res.rows) out.set(canonicalKey(kind, (row as Row)[this.entity.key], `${this.entity.name} key`), row);
    return out;
  }

  /**
   * Updates the given columns of one row (`UPDATE … RETURNING`), bumping the version column when
   * the entity has one and `patch` does not set it. The invalidation is published after COMMIT.
   * Resolves with the updated row, or `undefined` if there is no such row.
   */
  async update(id: Id, patch: Partial<R>): Promise<R | undefined> {
    assertWriteThrough(this.#core.cache, this.entity.name, 'update()');
    const cols = this.#columns(patch, false);
    if (cols.length === 0) throw new InvalidValueError(`${this.entity.name}.update: the patch sets no column`);
    const s = this.entity.sql;
    const sets = cols.map((c, i) => `${quoted(this.entity, c)} = $${i + 2}`);
    if (s.version && !cols.includes(this.entity.version!)) sets.push(`${s.version} = ${s.version} + 1`);
    const sql = `UPDATE ${s.table} SET ${sets.join(', ')} WHERE ${s.key} = $1 RETURNING ${this.#select}`;
    const key = await this.#canonical(id);
    return this.#write(sql, [key, ...cols.map((c) => (patch as Row)[c])]);
  }

  /**
   * Inserts a row, or updates the given columns if its key exists (`INSERT … ON CONFLICT (key)
   * DO UPDATE`), bumping the version on update when the row does not set it. The invalidation is
   * published after COMMIT. Resolves with the stored row. With `{ mode: 'write-behind' }` (after
   * `writeBehind(cache, handle)`) the row is written behind Postgres instead (docs/write-behind.md).
   */
  async upsert(row: Partial<R>, options?: { readonly mode?: 'write-through' | 'write-behind' | undefined }): Promise<R> {
    // write-behind (docs/write-behind.md): durable in Redis now, in Postgres after the flush delay.
    if (options?.mode === 'write-behind') return upsertBehind(this.#core.cache, this.entity.name, row as R); // the row as stored, version set
    assertWriteThrough(this.#core.cache, this.entity.name, 'a write-through upsert()');
    const id = (row as Row)[this.entity.key] as Id | undefined;
    if (id === undefined || id === null) throw new InvalidValueError(`${this.entity.name}.upsert: the row has no ${this.entity.key}`);
    await this.#canonical(id); // a key the column cannot hold is refused before any effect
    const cols = this.#columns(row, true);
    const s = this.entity.sql;
    const e = this.entity;
    const names = cols.map((c) => quoted(e, c));
    const updates = cols.filter((c) => c !== e.key).map((c) => `${quoted(e, c)} = EXCLUDED.${quoted(e, c)}`);
    if (s.version && !cols.includes(e.version!)) updates.push(`${s.version} = ${s.table}.${s.version} + 1`);
    if (updates.length === 0) updates.push(`${s.key} = EXCLUDED.${s.key}`);
    const sql = `INSERT INTO ${s.table} (${names.join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')}) ` +
      `ON CONFLICT (${s.key}) DO UPDATE SET ${updates.join(', ')} RETURNING ${this.#select}`;
    return (await this.#write(sql, cols.map((c) => (row as Row)[c])))!;
  }

  /** Deletes one row; the invalidation is published after COMMIT. Resolves true if a row was deleted. */
  async delete(id: Id): Promise<boolean> {
    assertWriteThrough(this.#core.cache, this.entity.name, 'delete()');
    const s = this.entity.sql;
    const sql = `DELETE FROM ${s.table} WHERE ${s.key} = $1 RETURNING ${s.key}`;
    const key = await this.#canonical(id);
    let found = false;
    await this.#inTx(async (tx) => {
      found = ((await tx.query(sql, [key])).rowCount ?? 0) > 0;
      if (found) tx.invalidate(this.entity.cacheKey(key));
    });
    return found;
  }

  /** Drops rows from every worker's cache (e.g. after a write made with plain SQL in a transaction). */
  async invalidate(...ids: Id[]): Promise<void> {
    await this.#keyKind();
    const keys = ids.map((id) => this.key(id));
    const tx = this.#tx();
    if (tx) tx.invalidate(...keys);
    else await this.#core.cache.invalidate(...keys);
  }

  async #write(sql: string, values: unknown[]): Promise<R | undefined> {
    let out: R | undefined;
    await this.#inTx(async (tx) => {
      const res = await tx.query<R>(sql, values);
      out = res.rows[0];
      // Private to the transaction; invalidated everywhere at COMMIT. No row, nothing changed.
      if (out !== undefined) tx.set(this.key((out as Row)[this.entity.key] as Id), out);
    });
    return out;
  }

  #inTx(fn: (tx: Transaction<{}>) => Promise<void>): Promise<void> {
    const tx = this.#tx();
    if (tx !== undefined) return fn(tx);
    return runTransaction(this.#core, this.#pool(), fn);
  }

  #tx(): Transaction<{}> | undefined {
    const scope = this.#core.scopes.getStore();
    return scope instanceof Transaction ? scope : undefined;
  }

  /** The registered columns of a patch (UnknownEntityError for any other). */
  #columns(patch: Partial<R>, allowKey: boolean): string[] {
    if (patch === null || typeof patch !== 'object') throw new InvalidValueError(`${this.entity.name}: a row must be an object`);
    const cols = Object.keys(patch).filter((c) => (patch as Row)[c] !== undefined);
    this.#registry.assertColumns(this.entity, cols);
    if (!allowKey && cols.includes(this.entity.key)) {
      throw new InvalidValueError(`${this.entity.name}.update: the key column ${this.entity.key} cannot be changed`);
    }
    return cols;
  }
}

function quoted(e: Entity, column: string): string {
  if (column === e.key) return e.sql.key;
  if (column === e.version) return e.sql.version!;
  return e.sql.columns[e.columns.indexOf(column)]!;
}

interface Entities {
  readonly registry: EntityRegistry;
  readonly handles: Map<string, EntityHandle>;
}
const perCache = new WeakMap<object, Entities>();

/**
 * `entity(cache, definition)` registers a table and returns its handle; `entity(cache, name)`
 * returns the handle of a registered one (UnknownEntityError otherwise).
 */
export function entityOf<R extends RowShape>(core: CacheCore<{}>, def: EntityDefinition | string, pool: () => pg.Pool): EntityHandle<R> {
  let ents = perCache.get(core);
  if (ents === undefined) perCache.set(core, (ents = { registry: new EntityRegistry(), handles: new Map() }));
  if (typeof def === 'string') {
    const e = ents.registry.get(def);
    return ents.handles.get(e.name) as unknown as EntityHandle<R>;
  }
  const e = ents.registry.register(def);
  const h = new EntityHandle<R>(core, ents.registry, e, pool);
  ents.handles.set(e.name, h as unknown as EntityHandle);
  return h;
}

/** The entities registered with a cache (for tools such as write-behind and install-triggers). */
export function entitiesOf(core: CacheCore<{}>): readonly Entity[] {
  return perCache.get(core)?.registry.all() ?? [];
}
