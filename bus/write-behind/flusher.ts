import { EventEmitter } from 'node:events';
import { errorReporter } from '../report-error.js';
import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { newOrigin } from '../bus.js';
import { closeClient, connect, duplicateForBullmq, type RedisClient } from '../connection.js';
import { defineEntity, type Entity } from '../entities.js';
import { UnknownEntityError } from '../errors.js';
import { busKeys, writeBehindKeys, writeBehindShared, type BusKeys } from '../keys.js';
import { closePg, openPg, type PgHandle } from '../pg.js';
import { Publisher } from '../publisher.js';
import { warnIfNotDurable } from './durability.js';
import { EntityFlusher, type DeadInfo, type FlushInfo, type RetryInfo } from './entity-flusher.js';
import { resolveFlusherOptions, type FlusherOptions, type ResolvedFlusherOptions } from './flusher-options.js';
import type { MissingParent } from './pg-errors.js';
import { readDefinition, readDefinitions } from './registry.js';
import type { TickData } from './ticks.js';

export interface FlusherEvents {
  /** A claimed batch was written and acknowledged. */
  flushed: [info: FlushInfo];
  /** A row Postgres refused was moved to the dead-letter list. */
  deadLetter: [info: DeadInfo];
  /** Postgres failed; the entity's rows stay pending and are retried after `delayMs`. */
  retry: [info: RetryInfo];
  /** Background errors (Redis unreachable, bad definitions). Logged when nobody listens. */
  error: [err: unknown];
}

/** Counters (plain numbers; read them at scrape time). */
export interface FlusherStats {
  batches: number;
  rowsFlushed: number;
  /** Rows Postgres already had in this or a newer version (replays, coalesced races). */
  rowsStale: number;
  deadLetters: number;
  /** Dead letters dropped from the list by its bound (`maxDeadLetters`), oldest first. */
  deadLettersDropped: number;
  /** Rows kept pending because the row their foreign key needs was itself pending. */
  rowsDeferred: number;
  retries: number;
  redisErrors: number;
}

/**
 * The write-behind flusher: applies the rows writers left pending in Redis to Postgres. Run it
 * embedded (`Flusher.open`) or in `cachebus sidecar` (createFlusherService). Any number may run
 * at once: claims are leased, upserts are version-guarded, acks compare-and-delete.
 */
export class Flusher extends EventEmitter<FlusherEvents> {
  readonly stats: FlusherStats = {
    batches: 0, rowsFlushed: 0, rowsStale: 0, deadLetters: 0, deadLettersDropped: 0, rowsDeferred: 0, retries: 0, redisErrors: 0,
  };
  readonly keys: BusKeys;
  readonly #o: ResolvedFlusherOptions;
  readonly #client: RedisClient;
  readonly #ownedClient: boolean;
  readonly #pg: PgHandle;
  readonly #shared: ReturnType<typeof writeBehindShared>;
  readonly #entities = new Map<string, EntityFlusher>();
  /** Entity name → names of the entities its table has a foreign key to (read from the catalogue). */
  #parents = new Map<string, Set<string>>();
  #parentsOf = '';
  readonly #publisher: Publisher;
  #worker: Worker<TickData> | undefined;
  /** The BullMQ worker's connection: passed in, so BullMQ leaves it open; closed here. */
  #workerConnection: RedisClient | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweep: Promise<void> | undefined;
  #sweepAgain: Promise<void> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #report = errorReporter(this as unknown as EventEmitter, () => `cachebus:${this.#o.namespace}:flusher`);

  private constructor(options: FlusherOptions) {
    super();
    this.#o = resolveFlusherOptions(options);
    this.keys = busKeys(this.#o.prefix, this.#o.namespace);
    this.#shared = writeBehindShared(this.keys);
    const conn = connect(this.#o.redis, `cachebus:${this.#o.namespace}:flusher`);
    this.#client = conn.client;
    this.#ownedClient = conn.owned;
    if (conn.owned) this.#client.on('error', (err: unknown) => this.#error(err));
    this.#pg = openPg(this.#o.pg, this.#o.concurrency + 1);
    this.#publisher = new Publisher(this.#client, {
      stream: this.keys.stream, origin: newOrigin(), maxEntryBytes: 65_536, streamMaxLen: this.#o.streamMaxLen,
    });
    for (const def of this.#o.entities ?? []) this.#add(defineEntity(def));
  }

  /** Creates a flusher and starts it: warns if Redis is not durable, starts the BullMQ worker and the sweep. */
  static async open(options: FlusherOptions): Promise<Flusher> {
    const f = new Flusher(options);
    try {
      await f.#start();
    } catch (err) {
      await f.close();
      throw err;
    }
    return f;
  }

  /** Entities being flushed. */
  get entities(): readonly Entity[] { return [...this.#entities.values()].map((e) => e.entity); }

  /** Drains one entity now (resolves when no due row is left, or Postgres is in backoff). */
  async drain(name: string): Promise<void> {
    let ef = this.#entities.get(name);
    if (ef === undefined && this.#o.entities === undefined) {
      await this.#discover();
      ef = this.#entities.get(name);
    }
    if (ef === undefined) throw new UnknownEntityError(`write-behind flusher: unknown entity ${JSON.stringify(name)}`);
    await ef.drain();
  }

  /**
   * Drains every entity now, parents (tables a foreign key points to) before their children.
   * One sweep runs at a time: a call made during a sweep resolves after one more full sweep, which
   * sees every row written before the call (calls made meanwhile share it).
   */
  drainAll(): Promise<void> {
    if (this.#sweep === undefined) {
      this.#sweep = this.#sweepOnce().finally(() => { this.#sweep = undefined; });
      return this.#sweep;
    }
    this.#sweepAgain ??= this.#sweep.catch(() => undefined).then(() => {
      this.#sweepAgain = undefined;
      return this.drainAll();
    });
    return this.#sweepAgain;
  }

  async #sweepOnce(): Promise<void> {
    if (this.#o.entities === undefined) await this.#discover().catch((err: unknown) => this.#redisError(err));
    await this.#readForeignKeys().catch((err: unknown) => this.#error(err));
    const started = new Map<string, Promise<void>>();
    const run = (name: string, path: Set<string>): Promise<void> => {
      let p = started.get(name);
      if (p !== undefined) return p;
      const ef = this.#entities.get(name)!;
      const parents = [...(this.#parents.get(name) ?? [])].filter((x) => !path.has(x) && this.#entities.has(x));
      const inner = new Set(path).add(name);
      p = Promise.all(parents.map((x) => run(x, inner))).then(() => ef.drain());
      started.set(name, p);
      return p;
    };
    await Promise.all([...this.#entities.keys()].map((n) => run(n, new Set())));
  }

  /** Foreign keys between the entities' tables (read again when the set of entities changes). */
  async #readForeignKeys(): Promise<void> {
    const ents = [...this.#entities.values()].map((e) => e.entity);
    const sig = ents.map((e) => `${e.name}=${e.table}`).join(',');
    if (sig === this.#parentsOf || ents.length < 1) return;
    const res = await this.#pg.pool.query<{ child: string; parent: string }>(
      `WITH t AS (SELECT n, to_regclass(t) AS oid FROM unnest($1::text[], $2::text[]) AS x(n, t))
       SELECT c.n AS child, p.n AS parent FROM pg_constraint k JOIN t c ON c.oid = k.conrelid JOIN t p ON p.oid = k.confrelid
       WHERE k.contype = 'f'`,
      [ents.map((e) => e.name), ents.map((e) => e.sql.table)],
    );
    const parents = new Map<string, Set<string>>();
    for (const r of res.rows) {
      if (r.child === r.parent) continue;
      let set = parents.get(r.child);
      if (set === undefined) parents.set(r.child, (set = new Set()));
      set.add(r.parent);
    }
    this.#parents = parents;
    this.#parentsOf = sig;
  }

  /** Entities whose table is `table` (as Postgres names it in a message: unqualified). */
  #byTable(table: string): EntityFlusher[] {
    return [...this.#entities.values()].filter((e) => e.entity.table === table || e.entity.table.endsWith(`.${table}`));
  }

  async #parentPending(p: MissingParent): Promise<boolean> {
    // The detail names the child's column; a single-column foreign key points at the parent's key.
    for (const ef of this.#byTable(p.table)) {
      if (await this.#client.hexists(writeBehindKeys(this.keys, ef.entity.name).overlay, p.values[0]!) === 1) return true;
    }
    return false;
  }

  /** ok is false while an entity is in backoff (Postgres failing). */
  health(): { ok: boolean; detail: unknown } {
    const blocked = [...this.#entities.values()].filter((e) => e.blocked);
    return {
      ok: blocked.length === 0 && !this.#closed,
      detail: {
        entities: this.#entities.size,
        blocked: Object.fromEntries(blocked.map((e) => [e.entity.name, { attempt: e.attempt, error: e.lastError }])),
        stats: { ...this.stats },
      },
    };
  }

  /** Stops taking work, finishes the batches in flight, closes what it opened. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      clearInterval(this.#sweepTimer);
      await this.#worker?.close().catch((err: unknown) => this.#error(err));
      this.#workerConnection?.disconnect();
      await Promise.all([...this.#entities.values()].map((e) => e.stop()));
      await this.#publisher.flushed();
      await closePg(this.#pg).catch(() => undefined);
      if (this.#ownedClient) await closeClient(this.#client);
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #start(): Promise<void> {
    await this.#client.ping();
    await warnIfNotDurable(this.#client);
    if (this.#o.entities === undefined) await this.#discover();
    if (this.#o.queueConcurrency > 0) {
      // BullMQ blocks on this connection and must see its blocking command settle on a reconnect:
      // a plain duplicate (ioredis re-sends it), not duplicateForBlocking (which drops it).
      const connection = duplicateForBullmq(this.#client, `cachebus:${this.#o.namespace}:flusher-queue`);
      this.#workerConnection = connection;
      connection.on('error', (err: unknown) => this.#error(err));
      this.#worker = new Worker<TickData>(this.#shared.queueName, async (job) => {
        const name = job.data?.entity;
        if (typeof name !== 'string') throw new UnknownEntityError('write-behind tick job without an entity');
        await this.drain(name);
      }, { connection, prefix: this.#shared.queuePrefix, concurrency: this.#o.queueConcurrency });
      this.#worker.on('error', (err) => this.#error(err));
    }
    this.#sweepTimer = setInterval(() => void this.drainAll(), this.#o.sweepIntervalMs);
    this.#sweepTimer.unref();
    void this.drainAll();
  }

  async #discover(): Promise<void> {
    const found = await readDefinitions(this.#client, this.#shared.entities, (name, err) => {
      this.#error(new Error(`write-behind: ignoring the definition of entity ${JSON.stringify(name)} in Redis: ${(err as Error)?.message ?? err}`));
    });
    for (const e of found) if (!this.#entities.has(e.name)) this.#add(e);
  }

  #add(entity: Entity): void {
    const o = this.#o;
    const ef = new EntityFlusher(entity, {
      client: this.#client, pool: this.#pg.pool, keys: writeBehindKeys(this.keys, entity.name), deadKey: this.#shared.dead,
      deadDroppedKey: this.#shared.deadDropped, maxDeadLetters: o.maxDeadLetters,
      definition: (hash) => readDefinition(this.#client, this.#shared.defs, entity.name, hash),
      parentPending: (p) => this.#parentPending(p),
      onDeferred: (table) => { for (const x of this.#byTable(table)) if (x !== ef) void x.drain(); },
      batchSize: o.batchSize, concurrency: o.concurrency, leaseMs: o.leaseMs,
      retryBaseMs: o.retryBaseMs, retryMaxMs: o.retryMaxMs, method: o.upsertMethod,
      closed: () => this.#closed,
      onFlushed: (info) => {
        this.stats.batches++;
        this.stats.rowsFlushed += info.ids.length;
        this.stats.rowsStale += info.ids.length - info.applied;
        this.stats.rowsDeferred += info.deferred;
        this.stats.deadLettersDropped += info.deadDropped;
        // Every cache drops its copy of what was written (one entry per batch): a worker that read
        // Postgres during the pending window (before it knew the entity) does not keep the old row.
        if (info.ids.length > 0) {
          this.#publisher.publish({ keys: info.ids.map((id) => entity.cacheKey(id)) }).catch((err: unknown) => this.#error(err));
        }
        this.emit('flushed', info);
      },
      onDead: (info) => {
        this.stats.deadLetters++;
        this.emit('deadLetter', info);
        // Readers drop the value Postgres refused and see the stored row again.
        this.#publisher.publish({ keys: [entity.cacheKey(info.id)] }).catch((err: unknown) => this.#error(err));
      },
      onRetry: (info) => {
        this.stats.retries++;
        this.emit('retry', info);
        this.#error(new Error(`write-behind ${info.entity}: Postgres failed${info.code ? ` (${info.code})` : ''}: ${info.message}; rows stay pending, retrying with backoff`));
      },
      onRedisError: (err) => this.#redisError(err),
      wake: () => void ef.drain(),
    });
    this.#entities.set(entity.name, ef);
  }

  #redisError(err: unknown): void {
    this.stats.redisErrors++;
    this.#error(err);
  }

  #error(err: unknown): void {
    this.#report(err);
  }

}
