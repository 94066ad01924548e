import { AsyncLocalStorage } from 'node:async_hooks';
import type pg from 'pg';
import type { Entity, EntityDefinition } from '../bus/entities.js';
import { defineEntity } from '../bus/entities.js';
import { ClosedError, InvalidOptionError } from '../bus/errors.js';
import { writeBehindShared } from '../bus/keys.js';
import { closePg, openPg, type PgHandle, type PgInput } from '../bus/pg.js';
import { pendingToRow } from '../bus/write-behind/codec.js';
import { warnIfNotDurable } from '../bus/write-behind/durability.js';
import { publishDefinition } from '../bus/write-behind/registry.js';
import { TickQueue } from '../bus/write-behind/ticks.js';
import { WriteBehindWriter, type WriterOptions, type WriterStats } from '../bus/write-behind/writer.js';
import type { Cache, Loader } from './cache.js';

/** Options of `writeBehind(cache, definition, options)`. */
export interface WriteBehindOptions extends WriterOptions {
  /**
   * Postgres for reading rows that are not pending (`get`): a pool (left open) or a URL.
   * @defaultValue `process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'`
   */
  readonly pg?: PgInput;
}

/** What `write` resolves with. */
export interface WriteResult {
  readonly id: string;
  /** The row's version, a decimal string (as `pg` returns bigint). */
  readonly version: string;
}

type Row = Record<string, unknown>;

interface Waiter { readonly id: string; readonly loader: Loader<{}>; resolve(v: unknown): void; reject(e: unknown): void }

/**
 * The miss hook of one cache: a miss on `<entity>:<id>` of a write-behind entity reads the
 * pending overlay first (one HMGET per entity per tick) and calls the original loader only
 * when no row is pending. Overlay strictly BEFORE Postgres: the flusher deletes an overlay row
 * only after its COMMIT, so "not pending" means Postgres already has it.
 */
class OverlayHook {
  readonly writers = new Map<string, WriteBehindWriter>();
  readonly handles = new Map<string, WriteBehindEntity>();
  #batch = new Map<WriteBehindWriter, Waiter[]>();

  readonly hook = (key: string, loader: Loader<{}>): Loader<{}> => {
    const i = key.indexOf(':');
    const w = i > 0 ? this.writers.get(key.slice(0, i)) : undefined;
    if (w === undefined) return loader;
    const id = key.slice(i + 1);
    return () => new Promise((resolve, reject) => {
      if (this.#batch.size === 0) queueMicrotask(() => this.#read());
      let list = this.#batch.get(w);
      if (list === undefined) this.#batch.set(w, (list = []));
      list.push({ id, loader, resolve, reject });
    });
  };

  #read(): void {
    const batch = this.#batch;
    this.#batch = new Map();
    for (const [w, waiters] of batch) {
      w.pending(waiters.map((x) => x.id)).then(
        (rows) => {
          // Loaders of the rows not pending are called together, so batching loaders still batch.
          waiters.forEach((x, i) => {
            const p = rows[i];
            if (p !== undefined) x.resolve(pendingToRow(w.entity, p));
            else {
              try {
                x.resolve(x.loader());
              } catch (err) {
                x.reject(err);
              }
            }
          });
        },
        // Redis unreachable: fail the read rather than serve a Postgres row that may be older.
        (err: unknown) => { for (const x of waiters) x.reject(err); },
      );
    }
  }
}

const hooks = new WeakMap<object, OverlayHook>();

/**
 * Runs a function outside any `cache.batch` / `cache.transaction` scope (the context captured
 * when this module loaded): a write-behind write is durable at once, so its local update and
 * invalidation must neither wait for a COMMIT nor vanish with a ROLLBACK.
 */
const outsideScopes = AsyncLocalStorage.snapshot();

/**
 * A write-behind entity of a cache: `write` is acknowledged once the row is durable in Redis,
 * and Postgres is written later by the flusher (`cachebus sidecar`, or an embedded `Flusher`).
 * Create it with `writeBehind(cache, definition)`.
 */
export class WriteBehindEntity<R extends Row = Row> {
  readonly entity: Entity;
  readonly #cache: Cache<{}>;
  readonly #writer: WriteBehindWriter;
  readonly #ticks: TickQueue;
  readonly #hook: OverlayHook;
  readonly #pg: PgHandle;
  readonly #select: string;
  #closing: Promise<void> | undefined;

  /** @internal use writeBehind() */
  constructor(cache: Cache<{}>, entity: Entity, writer: WriteBehindWriter, ticks: TickQueue, hook: OverlayHook, pgInput: PgInput | undefined) {
    this.#cache = cache;
    this.entity = entity;
    this.#writer = writer;
    this.#ticks = ticks;
    this.#hook = hook;
    this.#pg = openPg(pgInput);
    const s = entity.sql;
    this.#select = `SELECT ${[s.key, s.version!, ...s.columns].join(', ')} FROM ${s.table} WHERE ${s.key} = $1`;
  }

  /** Counters of the writer (rows written, script calls, refused rows, tick errors). */
  get stats(): Readonly<WriterStats> { return this.#writer.stats; }

  /**
   * Writes a whole row (columns left out become null) behind Postgres: assigns its version and
   * makes it durable in Redis in one atomic step (overlay + dirty mark), stores it in the local
   * cache, tells every other worker to drop its copy, and resolves. Postgres gets the row after
   * `flushDelayMs`. Rejects with BackpressureError (E_WB_BACKPRESSURE) when the entity already
   * has `maxPending` rows waiting; then nothing was written.
   */
  async write(row: R): Promise<WriteResult> {
    if (this.#closing !== undefined) throw new ClosedError('write-behind entity');
    const p = await this.#writer.write(row);
    // After the row is durable (I4); cache.set poisons this process's loads of the key in flight.
    await outsideScopes(() => this.#cache.set(this.entity.cacheKey(p.id), pendingToRow(this.entity, p)));
    return { id: p.id, version: p.version };
  }

  /** Read-through: the local value, else the pending row, else the Postgres row (undefined: none). */
  async get(id: string | number): Promise<R | undefined> {
    return (await this.#cache.get(this.entity.cacheKey(id), () => this.#load(id))) as R | undefined;
  }

  /** The row pending in Redis (written, not yet flushed), if any. */
  async pending(id: string | number): Promise<R | undefined> {
    const [p] = await this.#writer.pending([String(id)]);
    return p === undefined ? undefined : (pendingToRow(this.entity, p) as R);
  }

  /** Waits for the writes in flight, stops reading the overlay for this entity, closes its pool. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#writer.flushed();
      if (this.#hook.writers.get(this.entity.name) === this.#writer) {
        this.#hook.writers.delete(this.entity.name);
        this.#hook.handles.delete(this.entity.name);
      }
      await this.#ticks.close();
      await closePg(this.#pg);
    })();
    return this.#closing;
  }

  async #load(id: string | number): Promise<R | undefined> {
    const res = await this.#pg.pool.query<R>(this.#select, [id]);
    return res.rows[0];
  }

  /** @internal */
  get pool(): pg.Pool { return this.#pg.pool; }
}

/**
 * Registers a write-behind entity with a cache (which must have a bus: `redis` not false) and
 * returns its handle. Also records the definition in Redis for the sidecar's flusher, installs
 * the overlay-first miss hook (I6), and warns once (CACHEBUS_WB_DURABILITY) when Redis is not
 * configured for durability (noeviction + AOF).
 */
export async function writeBehind<R extends Row = Row>(
  cache: Cache<{}>,
  definition: EntityDefinition | { readonly entity: Entity },
  options: WriteBehindOptions = {},
): Promise<WriteBehindEntity<R>> {
  const bus = cache.bus;
  if (bus === undefined) throw new InvalidOptionError('write-behind needs a cache with a bus (options.redis must not be false)');
  const entity = 'entity' in definition ? definition.entity : defineEntity(definition);
  let hook = hooks.get(cache);
  if (hook === undefined) {
    hook = new OverlayHook();
    hooks.set(cache, hook);
    cache.setMissHook(hook.hook);
  }
  if (hook.writers.has(entity.name)) throw new InvalidOptionError(`entity ${entity.name} is already write-behind on this cache`);
  const shared = writeBehindShared(bus.keys);
  const ticks = new TickQueue(bus.client, shared.queueName, shared.queuePrefix);
  const onError = (err: unknown): void => {
    if (cache.listenerCount('error') > 0) cache.emit('error', err);
    else console.error(`[cachebus:${cache.namespace}] write-behind ${entity.name}: ${(err as Error)?.message ?? err}`);
  };
  const writer = new WriteBehindWriter(bus.client, bus.keys, entity, ticks, options, onError);
  await publishDefinition(bus.client, shared.entities, {
    name: entity.name, table: entity.table, key: entity.key, version: entity.version!, columns: entity.columns,
  });
  await warnIfNotDurable(bus.client);
  hook.writers.set(entity.name, writer);
  const handle = new WriteBehindEntity<R>(cache, entity, writer, ticks, hook, options.pg);
  hook.handles.set(entity.name, handle as unknown as WriteBehindEntity);
  return handle;
}

/**
 * The write-behind handle `writeBehind` registered for an entity of this cache, or undefined.
 * `cache.entity(name).upsert(row, { mode: 'write-behind' })` goes through it.
 */
export function writeBehindOf(cache: object, entity: string): WriteBehindEntity | undefined {
  return hooks.get(cache)?.handles.get(entity);
}

/**
 * `upsert(row, { mode: 'write-behind' })` of an entity handle: writes the row behind Postgres and
 * resolves with it as stored (version set). InvalidOptionError if `writeBehind(cache, handle)`
 * was not called for the entity.
 */
export async function upsertBehind<R extends Row>(cache: object, entity: string, row: R): Promise<R> {
  const h = writeBehindOf(cache, entity);
  if (h === undefined) {
    throw new InvalidOptionError(`entity ${entity} is not write-behind on this cache: call writeBehind(cache, cache.entity(...)) first`);
  }
  const { version } = await h.write(row);
  return { ...row, [h.entity.version!]: version };
}
