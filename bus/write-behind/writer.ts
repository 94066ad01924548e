import type { RedisClient } from '../connection.js';
import type { Entity } from '../entities.js';
import { BackpressureError, InvalidOptionError } from '../errors.js';
import { writeBehindKeys, writeBehindShared, type BusKeys, type WriteBehindKeys } from '../keys.js';
import type { Appended } from '../lua-append.js';
import { encodeRow, parsePending, type PendingRow } from './codec.js';
import { writeScript } from './lua-write.js';
import type { TickQueue } from './ticks.js';

export interface WriterOptions {
  /**
   * How long a written row waits before it may be flushed: writes to the same key inside this
   * window become one upsert. @defaultValue `100`
   */
  readonly flushDelayMs?: number;
  /**
   * Most rows of the entity pending in Redis; past it, `write` rejects with BackpressureError
   * (E_WB_BACKPRESSURE) instead of growing Redis without bound. Rewriting a row already pending
   * is always accepted. @defaultValue `100_000`
   */
  readonly maxPending?: number;
  /** Most rows sent in one Redis script call (writes of one tick are grouped). @defaultValue `500` */
  readonly maxBatch?: number;
}

export const kWriterDefaults = { flushDelayMs: 100, maxPending: 100_000, maxBatch: 500 } as const satisfies WriterOptions;

/**
 * A tick with more rows than this goes to Redis in two script calls at least (each at most
 * `maxBatch` rows), sent back to back. With one call per tick, writers that await each write
 * (64 in flight) move in lockstep: this process encodes 64 rows while Redis waits, then Redis runs
 * the script while this process waits. With two, Redis runs the second while this process
 * settles the first's writes and encodes the next rows (issue 15: 82k → 134–144k acks/s at 64
 * in flight, bench/README.md "ninth pass"). Smaller ticks stay one call: a call's fixed cost
 * would outweigh the overlap.
 */
export const kSplitAbove = 32;

export function resolveWriterOptions(user: WriterOptions | undefined): Required<WriterOptions> {
  const o = { ...kWriterDefaults, ...user };
  const check = (name: keyof WriterOptions, min: number): void => {
    const v = o[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
      throw new InvalidOptionError(`options.${name} must be an integer >= ${min} (got ${String(v)})`);
    }
  };
  check('flushDelayMs', 0);
  check('maxPending', 1);
  check('maxBatch', 1);
  return o;
}

interface Queued {
  readonly id: string;
  readonly json: string;
  resolve(version: string): void;
  reject(err: unknown): void;
}

export interface WriterStats {
  /** Rows made durable. */
  writes: number;
  /** Script calls (each carries rows written in one tick: up to maxBatch, and half the tick's when it has more than kSplitAbove). */
  scripts: number;
  /** Rows refused with BackpressureError. */
  refused: number;
  /** Tick jobs that could not be added (the rows were durable; the sweep flushes them). */
  tickErrors: number;
}

/**
 * The bus side of write-behind for one entity: rows written in the same tick go to Redis in
 * one atomic script call (version, overlay, dirty mark, definition, the invalidation entry),
 * then a tick job is added if the flush slot has none yet. Knows nothing of caches.
 */
export class WriteBehindWriter {
  readonly entity: Entity;
  readonly keys: WriteBehindKeys;
  readonly stats: WriterStats = { writes: 0, scripts: 0, refused: 0, tickErrors: 0 };
  readonly #client: RedisClient;
  readonly #shared: ReturnType<typeof writeBehindShared>;
  readonly #o: Required<WriterOptions>;
  readonly #ticks: TickQueue;
  readonly #onError: (err: unknown) => void;
  readonly #stream: string;
  readonly #appendArgs: (keys: string[]) => Appended;
  #queue: Queued[] = [];
  readonly #inFlight = new Set<Promise<void>>();

  /**
   * `appendArgs` encodes the invalidation of the written rows' cache keys for the write script
   * (`Bus.appendArgsFor`): the script appends it to the stream itself, atomically with the rows;
   * its `hint()` is called once the script ran (the wake-up hints of option `wake`).
   */
  constructor(
    client: RedisClient, bus: BusKeys, entity: Entity, ticks: TickQueue, options: WriterOptions | undefined,
    onError: (err: unknown) => void, appendArgs: (keys: string[]) => Appended,
  ) {
    if (entity.version === undefined) {
      throw new InvalidOptionError(`entity ${entity.name}: write-behind needs a version column (definition.version)`);
    }
    this.#client = client;
    this.entity = entity;
    this.keys = writeBehindKeys(bus, entity.name);
    this.#shared = writeBehindShared(bus);
    this.#o = resolveWriterOptions(options);
    this.#ticks = ticks;
    this.#onError = onError;
    this.#stream = bus.stream;
    this.#appendArgs = appendArgs;
  }

  get options(): Readonly<Required<WriterOptions>> { return this.#o; }

  /**
   * Makes one row durable in Redis. Resolves with the pending row (its version) once the script ran; rejects with
   * BackpressureError (nothing written) or the Redis error (nothing written: the script is atomic).
   * Throws InvalidValueError / UnknownEntityError synchronously for a bad row.
   */
  write(row: Record<string, unknown>, check?: (id: string) => void): Promise<PendingRow> {
    const { id, json } = encodeRow(this.entity, row);
    check?.(id); // everything is validated before the first effect
    const def = this.entity.hash;
    return new Promise((resolve, reject) => {
      if (this.#queue.length === 0) queueMicrotask(() => this.#send());
      this.#queue.push({ id, json, resolve: (version) => resolve({ id, version, def, json }), reject });
    });
  }

  /** The pending rows of these ids (undefined where none is pending). */
  async pending(ids: readonly string[]): Promise<(PendingRow | undefined)[]> {
    if (ids.length === 0) return [];
    const stored = await this.#client.hmget(this.keys.overlay, ...ids);
    return stored.map((s, i) => (s === null ? undefined : parsePending(ids[i]!, s)));
  }

  /** Resolves once every write issued so far has settled. */
  async flushed(): Promise<void> {
    while (this.#queue.length > 0 || this.#inFlight.size > 0) {
      if (this.#queue.length > 0) this.#send();
      await Promise.allSettled([...this.#inFlight]);
    }
  }

  #send(): void {
    const all = this.#queue;
    this.#queue = [];
    const size = all.length > kSplitAbove ? Math.min(this.#o.maxBatch, Math.ceil(all.length / 2)) : this.#o.maxBatch;
    for (let i = 0; i < all.length; i += size) {
      const p = this.#run(all.slice(i, i + size));
      this.#inFlight.add(p);
      void p.finally(() => this.#inFlight.delete(p));
    }
  }

  async #run(batch: Queued[]): Promise<void> {
    const e = this.entity;
    const args: (string | number)[] = [this.#o.flushDelayMs, this.#o.maxPending, e.name, e.hash, e.json, batch.length];
    for (const q of batch) args.push(q.id, q.json);
    const k = this.keys;
    let out: number[];
    let appended: Appended;
    try {
      appended = this.#appendArgs([...new Set(batch.map((q) => e.cacheKey(q.id)))]);
      args.push(...appended.args);
      this.stats.scripts++;
      out = await writeScript.run<number[]>(
        this.#client, [k.overlay, k.dirty, k.version, k.tick, this.#shared.entities, this.#shared.defs, this.#stream], args);
    } catch (err) {
      for (const q of batch) q.reject(err);
      return;
    }
    appended.hint(); // the rows and their invalidation are in Redis: peers that reload now read the overlay
    const [tickDelay, slot, pending] = out as [number, number, number];
    if (tickDelay >= 0) {
      this.#ticks.schedule(this.entity.name, slot, tickDelay, (err) => {
        this.stats.tickErrors++;
        this.#onError(err);
      });
    }
    batch.forEach((q, i) => {
      const v = out[i + 3];
      if (v === undefined || v === 0) {
        this.stats.refused++;
        q.reject(new BackpressureError(this.entity.name, pending));
      } else {
        this.stats.writes++;
        q.resolve(String(v));
      }
    });
  }
}
