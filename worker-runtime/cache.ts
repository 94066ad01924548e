import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { Bus } from '../bus/bus.js';
import { ClosedError, InvalidValueError, PublishError } from '../bus/errors.js';
import type { GapCause } from '../bus/reader.js';
import { assertKey, type DecodedEntry } from '../bus/wire.js';
import { newStats, type CacheEvents, type CacheStats, type ClearCause, type DropReason } from './events.js';
import { resolveOptions, type CacheOptions, type ResolvedOptions } from './options.js';
import { createStore } from './policies/index.js';
import type { EvictReason, LocalStore } from './policies/types.js';

/** A value, or a promise of it: `get` answers a local hit synchronously; `await` works on both. */
export type Awaitable<T> = T | Promise<T>;
export type Loader<V> = () => Awaitable<V | undefined>;

export interface EntryOptions {
  /** Tags of the entry; `invalidateTags` drops every entry carrying one of them. */
  readonly tags?: readonly string[];
  /** Time to live of this entry, ms (overrides options.ttl). */
  readonly ttl?: number;
}

interface Flight<V> {
  readonly promise: Promise<V | undefined>;
  readonly tags: readonly string[] | undefined;
  /** Set when an invalidation of the key (or a tag, or a clear) overtook the load: its result is not stored. */
  poisoned: boolean;
}

const EMPTY: readonly string[] = [];

/**
 * A worker's local cache kept coherent by the namespace's invalidation stream.
 * Create it with `createCache`.
 */
export class Cache<V extends {} = {}> extends EventEmitter<CacheEvents> {
  readonly namespace: string;
  readonly stats: CacheStats = newStats();
  readonly #o: ResolvedOptions<V>;
  readonly #store: LocalStore<V>;
  readonly #flights = new Map<string, Flight<V>>();
  readonly #tagKeys = new Map<string, Set<string>>();
  readonly #keyTags = new Map<string, readonly string[]>();
  #bus: Bus | undefined;
  #servable = true;
  #caughtUpAt = performance.now();
  #watchdog: NodeJS.Timeout | undefined;
  #emitHits = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  #lastLogged = '';

  /** @internal use createCache */
  constructor(options: CacheOptions<V>) {
    super();
    this.#o = resolveOptions(options);
    this.namespace = this.#o.namespace;
    this.#store = createStore<V>(this.#o.policy, {
      maxEntries: this.#o.maxEntries,
      maxBytes: this.#o.maxBytes,
      sizeOf: this.#o.sizeOf,
      ttl: this.#o.ttl,
      onEvict: (key, _value, reason) => this.#onEvict(key, reason),
    });
    const track = (): void => {
      queueMicrotask(() => { this.#emitHits = this.listenerCount('hit') + this.listenerCount('miss') > 0; });
    };
    const untyped = this as EventEmitter;
    untyped.on('newListener', track);
    untyped.on('removeListener', track);
  }

  /** @internal */
  async open(): Promise<this> {
    const o = this.#o;
    if (o.redis === false) return this;
    this.#bus = await Bus.open(
      {
        redis: o.redis, namespace: o.namespace, prefix: o.prefix, secret: o.secret,
        maxEntryBytes: o.maxEntryBytes, streamMaxLen: o.streamMaxLen, streamMaxAgeMs: o.streamMaxAgeMs,
        readCount: o.readCount, blockMs: o.blockMs, connectTimeoutMs: o.connectTimeoutMs,
      },
      {
        onEntry: (e) => this.#onEntry(e),
        onGap: (cause, detail) => this.#onGap(cause, detail),
        onBadEntry: (reason, id, message) => {
          this.stats.badEntries[reason]++;
          this.emit('badEntry', { reason, id, message });
        },
        onStatus: (status, previous) => this.emit('status', { status, previous }),
        onCaughtUp: (at) => {
          this.#caughtUpAt = at;
          if (!this.#servable) this.#checkServable();
        },
        onError: (err) => this.#error(err),
      },
    );
    const every = Math.max(5, Math.min(1000, Math.floor(o.maxStaleMs / 10)));
    this.#watchdog = setInterval(() => this.#checkServable(), every);
    this.#watchdog.unref();
    return this;
  }

  /** The bus (undefined for a local-only cache). */
  get bus(): Bus | undefined { return this.#bus; }
  /** Local entries. */
  get size(): number { return this.#store.size; }
  /** Local bytes, as measured by sizeOf (0 without maxBytes). */
  get bytes(): number { return this.#store.bytes; }
  /** false while the bus is not provably current (I3): local entries are not served. */
  get servable(): boolean { return this.#servable; }

  /**
   * Read-through: the local value on a hit (synchronously), else one load per key per process
   * (single-flight). A load overtaken by an invalidation of its key, one of its tags or a clear
   * is returned to its callers but not stored (I1). `undefined` from the loader is not stored.
   */
  get(key: string, loader: Loader<V>, options?: EntryOptions): Awaitable<V | undefined> {
    if (this.#servable) {
      const v = this.#store.get(key);
      if (v !== undefined) {
        this.stats.hits++;
        if (this.#emitHits) this.emit('hit', key);
        return v;
      }
    }
    return this.#miss(key, loader, options);
  }

  /** The local value if present and servable; never loads. Counts a hit or a miss. */
  peek(key: string): V | undefined {
    const v = this.#servable ? this.#store.get(key) : undefined;
    if (v !== undefined) this.stats.hits++;
    else this.stats.misses++;
    return v;
  }

  /** Stores a value locally and tells every other worker to drop its copy. */
  async set(key: string, value: V, options?: EntryOptions): Promise<void> {
    this.#assertOpen();
    this.#checkKey(key);
    if (value === undefined) throw new InvalidValueError(`cannot cache undefined (key ${JSON.stringify(key)})`);
    if (options?.tags) for (const t of options.tags) this.#checkKey(t, 'tag');
    this.#poison(key);
    this.#put(key, value, options);
    await this.#publish({ keys: [key] });
  }

  /** Drops the keys here at once; resolves once the invalidation is in the stream. */
  async invalidate(...keys: string[]): Promise<void> {
    this.#assertOpen();
    for (const k of keys) this.#checkKey(k);
    this.applyInvalidation(keys, EMPTY, 'invalidate');
    await this.#publish({ keys });
  }

  /** Drops every entry carrying one of the tags, here and in every worker. */
  async invalidateTags(...tags: string[]): Promise<void> {
    this.#assertOpen();
    for (const t of tags) this.#checkKey(t, 'tag');
    this.applyInvalidation(EMPTY, tags, 'tag');
    await this.#publish({ tags });
  }

  /** Clears every cache of the namespace. */
  async clear(): Promise<void> {
    this.#assertOpen();
    this.#clearLocal('local');
    await this.#publish({ clear: true });
  }

  /** Stops reading, waits for pending publishes, closes connections cachebus opened. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#servable = false;
      clearInterval(this.#watchdog);
      await this.#bus?.close();
      this.#clearLocal('close');
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Drops keys and tagged entries locally and poisons their in-flight loads. The single place
   * every invalidation (local, remote, transactional) goes through. Returns the number dropped.
   */
  applyInvalidation(keys: readonly string[], tags: readonly string[], reason: DropReason): number {
    let dropped = 0;
    for (const k of keys) if (this.#drop(k, reason)) dropped++;
    for (const t of tags) dropped += this.#dropTag(t, reason);
    return dropped;
  }

  // ---- internals -------------------------------------------------------------------------

  #miss(key: string, loader: Loader<V>, options: EntryOptions | undefined): Promise<V | undefined> {
    this.stats.misses++;
    if (this.#emitHits) this.emit('miss', key);
    if (this.#closed) return Promise.reject(new ClosedError());
    try {
      this.#checkKey(key);
    } catch (err) {
      return Promise.reject(err);
    }
    if (!this.#servable) this.stats.unservableReads++;
    const existing = this.#flights.get(key);
    if (existing !== undefined) return existing.promise;
    const started = performance.now();
    let resolveFlight!: (v: V | undefined) => void, rejectFlight!: (e: unknown) => void;
    const promise = new Promise<V | undefined>((res, rej) => { resolveFlight = res; rejectFlight = rej; });
    const flight: Flight<V> = { promise, tags: options?.tags, poisoned: false };
    this.#flights.set(key, flight);
    this.stats.loads++;
    void (async () => {
      let stored = false;
      try {
        const value = await loader();
        if (!flight.poisoned && this.#servable && value !== undefined) {
          this.#put(key, value, options);
          stored = true;
        } else if (flight.poisoned) {
          this.stats.loadsDiscarded++;
        }
        if (this.#flights.get(key) === flight) this.#flights.delete(key);
        this.emit('load', { key, durationMs: performance.now() - started, stored });
        resolveFlight(value);
      } catch (error) {
        if (this.#flights.get(key) === flight) this.#flights.delete(key);
        this.stats.loadErrors++;
        this.emit('load', { key, durationMs: performance.now() - started, stored, error });
        rejectFlight(error);
      }
    })();
    return promise;
  }

  #put(key: string, value: V, options: EntryOptions | undefined): void {
    if (this.#keyTags.size > 0) this.#untag(key);
    let ok: boolean;
    try {
      ok = this.#store.set(key, value, options?.ttl);
    } catch (err) {
      throw new InvalidValueError(`cannot measure the value of ${JSON.stringify(key)} (options.sizeOf threw)`, { cause: err });
    }
    const tags = options?.tags;
    if (ok && tags !== undefined && tags.length > 0) {
      this.#keyTags.set(key, tags);
      for (const t of tags) {
        let set = this.#tagKeys.get(t);
        if (set === undefined) this.#tagKeys.set(t, (set = new Set()));
        set.add(key);
      }
    }
  }

  #untag(key: string): void {
    const tags = this.#keyTags.get(key);
    if (tags === undefined) return;
    this.#keyTags.delete(key);
    for (const t of tags) {
      const set = this.#tagKeys.get(t);
      if (set !== undefined && set.delete(key) && set.size === 0) this.#tagKeys.delete(t);
    }
  }

  #poison(key: string): void {
    const f = this.#flights.get(key);
    if (f !== undefined) {
      f.poisoned = true;
      this.#flights.delete(key);
    }
  }

  #drop(key: string, reason: DropReason): boolean {
    this.#poison(key);
    const had = this.#store.delete(key);
    if (this.#keyTags.size > 0) this.#untag(key);
    if (had) {
      this.stats.keysDropped++;
      if (this.listenerCount('drop') > 0) this.emit('drop', { key, reason });
    }
    return had;
  }

  #dropTag(tag: string, reason: DropReason): number {
    for (const [key, f] of this.#flights) {
      if (f.tags?.includes(tag)) {
        f.poisoned = true;
        this.#flights.delete(key);
      }
    }
    const keys = this.#tagKeys.get(tag);
    if (keys === undefined) return 0;
    let n = 0;
    for (const k of [...keys]) if (this.#drop(k, reason)) n++;
    return n;
  }

  #clearLocal(cause: ClearCause): number {
    const n = this.#store.size;
    for (const f of this.#flights.values()) f.poisoned = true;
    this.#flights.clear();
    this.#store.clear();
    this.#tagKeys.clear();
    this.#keyTags.clear();
    this.stats.clears[cause]++;
    this.emit('clear', { cause, entries: n });
    return n;
  }

  #onEvict(key: string, reason: EvictReason): void {
    this.stats.evictions[reason]++;
    if (this.#keyTags.size > 0) this.#untag(key);
    if (this.listenerCount('drop') > 0) this.emit('drop', { key, reason });
  }

  #onEntry(e: DecodedEntry): void {
    this.stats.entriesReceived++;
    const dropped = e.clear ? this.#clearLocal('remote') : this.applyInvalidation(e.keys, e.tags, e.tags.length > 0 ? 'tag' : 'invalidate');
    this.emit('received', {
      id: e.id, origin: e.origin, keys: e.keys.length, tags: e.tags.length, clear: e.clear,
      lagMs: Date.now() - e.time, dropped,
    });
  }

  #onGap(cause: GapCause, detail: string): void {
    this.stats.gaps[cause]++;
    this.#clearLocal('gap');
    this.emit('gap', { cause, detail });
  }

  #checkServable(): void {
    const staleForMs = performance.now() - this.#caughtUpAt;
    const servable = !this.#closed && staleForMs <= this.#o.maxStaleMs;
    if (servable !== this.#servable) {
      this.#servable = servable;
      this.emit('servable', { servable, staleForMs });
    }
  }

  async #publish(inv: { keys?: readonly string[]; tags?: readonly string[]; clear?: boolean }): Promise<void> {
    const bus = this.#bus;
    if (bus === undefined) return;
    this.stats.invalidationsPublished++;
    try {
      const ids = await bus.publish(inv);
      this.stats.entriesPublished += ids.length;
      this.emit('published', { keys: inv.keys?.length ?? 0, tags: inv.tags?.length ?? 0, clear: inv.clear ?? false, ids });
    } catch (err) {
      this.stats.publishErrors++;
      throw err instanceof PublishError ? err : new PublishError(String(err), { cause: err });
    }
  }

  #checkKey(key: string, what = 'key'): void {
    assertKey(key, this.#o.maxKeyBytes, what);
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError();
  }

  #error(err: unknown): void {
    if (this.listenerCount('error') > 0) {
      this.emit('error', err);
      return;
    }
    const msg = String((err as Error)?.message ?? err);
    if (msg !== this.#lastLogged) {
      this.#lastLogged = msg;
      console.error(`[cachebus:${this.namespace}] ${msg}`);
    }
  }
}

/** Creates a cache, connects its bus and captures the stream's end before it serves. */
export async function createCache<V extends {} = {}>(options: CacheOptions<V>): Promise<Cache<V>> {
  const cache = new Cache<V>(options);
  return cache.open();
}
