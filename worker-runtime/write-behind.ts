import type pg from 'pg';
import type { Entity, EntityDefinition } from '../bus/entities.js';
import { defineEntity } from '../bus/entities.js';
import type { RedisClient } from '../bus/connection.js';
import { ClosedError, InvalidOptionError, UnknownEntityError, WriteModeError } from '../bus/errors.js';
import { canonicalKey, loadKeyKind, type KeyKind } from '../bus/key-types.js';
import { writeBehindKeys, writeBehindShared, type BusKeys } from '../bus/keys.js';
import { closePg, openPg, type PgHandle, type PgInput } from '../bus/pg.js';
import { parsePending, pendingToRow } from '../bus/write-behind/codec.js';
import { warnIfNotDurable } from '../bus/write-behind/durability.js';
import { publishDefinition, readDefinitions } from '../bus/write-behind/registry.js';
import { TickQueue } from '../bus/write-behind/ticks.js';
import { recordMaxPending } from './write-behind-limits.js';
import { kWriterDefaults, WriteBehindWriter, type WriterOptions, type WriterStats } from '../bus/write-behind/writer.js';
import type { Cache, Loader } from './cache.js';
import { cacheOpenHooks } from './open-hooks.js';

/** Options of `writeBehind(cache, definition, options)`. */
export interface WriteBehindOptions extends WriterOptions {
  /**
   * Postgres for reading rows that are not pending (`get`): a pool (left open) or a URL.
   * @defaultValue `process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'`
   */
  readonly pg?: PgInput | undefined;
}

/** What `write` resolves with. */
export interface WriteResult {
  readonly id: string;
  /** The row's version, a decimal string (as `pg` returns bigint). */
  readonly version: string;
}

type Row = Record<string, unknown>;

interface Waiter { readonly id: string; readonly loader: Loader<{}>; resolve(v: unknown): void; reject(e: unknown): void }

/** A write-behind entity as the overlay reader knows it: from a local writeBehind() or from Redis. */
interface Known { readonly name: string; readonly entity: Entity | undefined; readonly overlay: string }

/** How often every cache re-reads the write-behind entities registered in Redis. */
const kRefreshMs = 1_000;

/**
 * The miss hook of one cache: a miss on `<entity>:<id>` of a write-behind entity reads the
 * pending overlay first (one HMGET per entity per tick) and calls the original loader only
 * when no row is pending. Overlay strictly BEFORE Postgres: the flusher deletes an overlay row
 * only after its COMMIT, so "not pending" means Postgres already has it. Every cache with a bus
 * has one (installed at open), knowing the write-behind entities registered in Redis (read at
 * open and every second) as well as the ones it writes itself.
 */
class OverlayHook {
  readonly handles = new Map<string, WriteBehindEntity>();
  readonly known = new Map<string, Known>();
  readonly #client: RedisClient;
  readonly #keys: BusKeys;
  #batch = new Map<Known, Waiter[]>();

  constructor(client: RedisClient, keys: BusKeys) {
    this.#client = client;
    this.#keys = keys;
  }

  /** Knows `entity` as write-behind (a local writer's definition wins over Redis's). */
  add(entity: Entity, local: boolean): void {
    if (!local && this.handles.has(entity.name)) return;
    this.known.set(entity.name, { name: entity.name, entity, overlay: writeBehindKeys(this.#keys, entity.name).overlay });
    this.#probes.delete(entity.name);
  }

  /** Reads the entities registered in Redis (invalid ones are ignored: the flusher reports them). */
  async refresh(): Promise<void> {
    for (const e of await readDefinitions(this.#client, writeBehindShared(this.#keys).entities, () => undefined)) this.add(e, false);
  }

  readonly hook = (key: string, loader: Loader<{}>): Loader<{}> => {
    const i = key.indexOf(':');
    if (i <= 0) return loader;
    const name = key.slice(0, i);
    let k = this.known.get(name);
    let probe = false;
    if (k === undefined) {
      // Not known as write-behind (yet): the entity may have been registered a moment ago. Its
      // overlay is read anyway, side by side with the loader (no added latency): a pending row wins.
      if (!IDENT.test(name)) return loader;
      k = this.#probes.get(name);
      if (k === undefined) this.#probes.set(name, (k = { name, entity: undefined, overlay: writeBehindKeys(this.#keys, name).overlay }));
      probe = true;
    }
    const id = key.slice(i + 1);
    const known = k;
    return () => new Promise((resolve, reject) => {
      if (this.#batch.size === 0) queueMicrotask(() => this.#read());
      let list = this.#batch.get(known);
      if (list === undefined) this.#batch.set(known, (list = []));
      let load = loader;
      if (probe) {
        const started = Promise.resolve().then(() => loader());
        started.catch(() => undefined);
        load = () => started;
      }
      list.push({ id, loader: load, resolve, reject });
    });
  };

  readonly #probes = new Map<string, Known>();

  #read(): void {
    const batch = this.#batch;
    this.#batch = new Map();
    for (const [k, waiters] of batch) {
      this.#client.hmget(k.overlay, ...waiters.map((x) => x.id)).then(
        async (stored) => {
          let entity = k.entity;
          if (entity === undefined && stored.some((s) => s !== null)) {
            // A pending row of an entity this cache did not know yet: learn it now.
            await this.refresh().catch(() => undefined);
            entity = this.known.get(k.name)?.entity;
          }
          // Loaders of the rows not pending are called together, so batching loaders still batch.
          waiters.forEach((x, i) => {
            const s = stored[i];
            if (s !== null && s !== undefined && entity !== undefined) {
              try {
                x.resolve(pendingToRow(entity, parsePending(x.id, s)));
              } catch (err) {
                x.reject(err);
              }
              return;
            }
            try {
              x.resolve(x.loader());
            } catch (err) {
              x.reject(err);
            }
          });
        },
        // Redis unreachable: fail the read rather than serve a Postgres row that may be older.
        (err: unknown) => { for (const x of waiters) x.reject(err); },
      );
    }
  }
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

const hooks = new WeakMap<object, OverlayHook>();

/** The overlay hook of a cache (created, installed and refreshed once per cache). */
async function overlayOf(cache: Cache<{}>): Promise<OverlayHook | undefined> {
  const bus = cache.bus;
  if (bus === undefined) return undefined;
  let hook = hooks.get(cache);
  if (hook !== undefined) return hook;
  hook = new OverlayHook(bus.client, bus.keys);
  hooks.set(cache, hook);
  cache.setMissHook(hook.hook);
  await hook.refresh();
  return hook;
}

// Every cache with a bus reads the overlay of every write-behind entity of its namespace (I6),
// whether or not it ever calls writeBehind().
cacheOpenHooks.push(async (cache) => {
  const hook = await overlayOf(cache);
  if (hook === undefined) return;
  const timer = setInterval(() => { hook.refresh().catch(() => undefined); }, kRefreshMs);
  timer.unref();
  return async () => { clearInterval(timer); };
});

/**
 * Throws WriteModeError when `entity` is written behind Postgres in this cache's namespace (as
 * far as this cache knows: its own writeBehind() calls and the registry in Redis). Write-through
 * writes of such an entity would not be ordered with its pending rows.
 */
export function assertWriteThrough(cache: object, entity: string, operation: string): void {
  if (hooks.get(cache)?.known.has(entity)) throw new WriteModeError(entity, operation);
}

/**
 * A write-behind entity of a cache: `write` is acknowledged once the row is durable in Redis,
 * and Postgres is written later by the flusher (`cachebus sidecar`, or an embedded `Flusher`).
 * Create it with `writeBehind(cache, definition)`.
 */
export class WriteBehindEntity<R extends object = Row> {
  readonly entity: Entity;
  readonly #cache: Cache<{}>;
  readonly #writer: WriteBehindWriter;
  readonly #ticks: TickQueue;
  readonly #hook: OverlayHook;
  readonly #pg: PgHandle;
  readonly #select: string;
  #closing: Promise<void> | undefined;
  #kind: Promise<KeyKind> | undefined;

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

  /** The id as Postgres prints it (InvalidValueError for an id the key column could not hold). */
  async #canonical(id: unknown): Promise<string> {
    this.#kind ??= loadKeyKind(this.#pg.pool, this.entity.sql.table, this.entity.key, this.entity.name).then((k) => {
      if (k === undefined) throw new UnknownEntityError(`entity ${this.entity.name}: table ${this.entity.sql.table} does not exist or has no key column ${this.entity.key}`);
      return k;
    });
    this.#kind.catch(() => { this.#kind = undefined; }); // a failed lookup is tried again next time
    return canonicalKey(await this.#kind, id, `${this.entity.name} key`);
  }

  /** Counters of the writer (rows written, script calls, refused rows, tick errors). */
  get stats(): Readonly<WriterStats> { return this.#writer.stats; }

  /**
   * Writes a whole row (columns left out become null) behind Postgres: validates it, then in one
   * atomic Redis script (one round trip) assigns its version, makes it durable (overlay + dirty
   * mark) and appends its invalidation to the stream; stores it in the local cache and resolves.
   * Postgres gets the row after `flushDelayMs`. Rejects with BackpressureError (E_WB_BACKPRESSURE) when the entity already
   * has `maxPending` rows waiting; then nothing was written.
   */
  async write(row: R): Promise<WriteResult> {
    if (this.#closing !== undefined) throw new ClosedError('write-behind entity');
    // The key as Postgres prints it (issue 12 case 12): '007' and 7 are one row, one cache key.
    const key = this.entity.key;
    if (row !== null && typeof row === 'object' && key in row) {
      const given = (row as Record<string, unknown>)[key];
      const canon = await this.#canonical(given);
      if (canon !== String(given)) row = { ...row, [key]: canon }; // a 7 stays the number 7; '007' becomes '7'
    }
    // The row and its cache key are validated before the script runs: a rejected write changed nothing.
    const p = await this.#writer.write(row as Row, (id) => this.#cache.assertKey(this.entity.cacheKey(id)));
    // The script made the row durable AND appended its invalidation (one atomic step, I4): only
    // this process's copy is left to update (its loads of the key in flight are poisoned).
    this.#cache.setLocal(this.entity.cacheKey(p.id), pendingToRow(this.entity, p));
    return { id: p.id, version: p.version };
  }

  /** Read-through: the local value, else the pending row, else the Postgres row (undefined: none). */
  async get(id: string | number): Promise<R | undefined> {
    const canon = await this.#canonical(id);
    return (await this.#cache.get(this.entity.cacheKey(canon), () => this.#load(canon))) as R | undefined;
  }

  /** The row pending in Redis (written, not yet flushed), if any. */
  async pending(id: string | number): Promise<R | undefined> {
    const [p] = await this.#writer.pending([await this.#canonical(id)]);
    return p === undefined ? undefined : (pendingToRow(this.entity, p) as R);
  }

  /** Waits for the writes in flight, stops reading the overlay for this entity, closes its pool. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#writer.flushed();
      // The entity stays known as write-behind (its rows may still be pending): reads keep
      // going through the overlay.
      if (this.#hook.handles.get(this.entity.name) === (this as unknown as WriteBehindEntity)) this.#hook.handles.delete(this.entity.name);
      await this.#ticks.close();
      await closePg(this.#pg);
    })();
    return this.#closing;
  }

  async #load(id: string | number): Promise<R | undefined> {
    const res = await this.#pg.pool.query<Row>(this.#select, [id]);
    return res.rows[0] as R | undefined;
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
export async function writeBehind<R extends object = Row>(
  cache: Cache<any>, // any cache, whatever its value type
  definition: EntityDefinition | { readonly entity: Entity },
  options: WriteBehindOptions = {},
): Promise<WriteBehindEntity<R>> {
  const bus = cache.bus;
  if (bus === undefined) throw new InvalidOptionError('write-behind needs a cache with a bus (options.redis must not be false)');
  const entity = 'entity' in definition ? definition.entity : defineEntity(definition);
  const hook = (await overlayOf(cache))!;
  if (hook.handles.has(entity.name)) throw new InvalidOptionError(`entity ${entity.name} is already write-behind on this cache`);
  const shared = writeBehindShared(bus.keys);
  const ticks = new TickQueue(bus.client, shared.queueName, shared.queuePrefix);
  const onError = (err: unknown): void => cache.reportError(err); // error event, else options.logger, else stderr
  const writer = new WriteBehindWriter(bus.client, bus.keys, entity, ticks, options, onError, (keys) => bus.appendArgsFor({ keys }));
  await publishDefinition(bus.client, shared, entity);
  await warnIfNotDurable(bus.client);
  const handle = new WriteBehindEntity<R>(cache, entity, writer, ticks, hook, options.pg);
  hook.handles.set(entity.name, handle as unknown as WriteBehindEntity);
  hook.add(entity, true);
  recordMaxPending(cache, entity.name, options.maxPending ?? kWriterDefaults.maxPending);
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
export async function upsertBehind<R extends object>(cache: object, entity: string, row: R): Promise<R> {
  const h = writeBehindOf(cache, entity);
  if (h === undefined) {
    throw new InvalidOptionError(`entity ${entity} is not write-behind on this cache: call writeBehind(cache, cache.entity(...)) first`);
  }
  const { version } = await h.write(row as Row);
  return { ...row, [h.entity.version!]: version };
}
