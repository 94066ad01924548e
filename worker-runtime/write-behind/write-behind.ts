import type pg from 'pg';
import type { Entity, EntityDefinition } from '../../bus/entities.js';
import { defineEntity } from '../../bus/entities.js';
import { ClosedError, InvalidOptionError, UnknownEntityError } from '../../bus/errors.js';
import { canonicalKey, loadKeyKind, type KeyKind } from '../../bus/key-types.js';
import { writeBehindShared } from '../../bus/keys.js';
import { closePg, openPg, type PgHandle, type PgInput } from '../../bus/pg.js';
import { pendingToRow } from '../../bus/write-behind/pending.js';
import { warnIfNotDurable } from '../../bus/write-behind/durability.js';
import { publishDefinition } from '../../bus/write-behind/registry.js';
import { TickQueue } from '../../bus/write-behind/ticks.js';
import { kWriterDefaults, WriteBehindWriter, type WriterOptions, type WriterStats } from '../../bus/write-behind/writer.js';
import { recordMaxPending } from '../write-behind-limits.js';
import type { Cache } from '../cache.js';
import { overlayOf, writeBehindOf as handleOf, type BehindHandle, type OverlayHook, type WriteResult } from '../overlay.js';

export type { WriteResult } from '../overlay.js';

type Row = Record<string, unknown>;

/** Options of `writeBehind(cache, definition, options)`. */
export interface WriteBehindOptions extends WriterOptions {
  /**
   * Postgres for reading rows that are not pending (`get`): a pool (left open) or a URL.
   * @defaultValue `process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'`
   */
  readonly pg?: PgInput | undefined;
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
      if (this.#hook.handles.get(this.entity.name) === (this as unknown as BehindHandle)) this.#hook.handles.delete(this.entity.name);
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
  hook.handles.set(entity.name, handle as unknown as BehindHandle);
  hook.add(entity, true);
  recordMaxPending(cache, entity.name, options.maxPending ?? kWriterDefaults.maxPending);
  return handle;
}


/**
 * The write-behind handle `writeBehind` registered for an entity of this cache, or undefined.
 * `entity(cache, name).upsert(row, { mode: 'write-behind' })` goes through it.
 */
export function writeBehindOf(cache: object, entity: string): WriteBehindEntity | undefined {
  return handleOf(cache, entity) as WriteBehindEntity | undefined;
}
