import { AsyncLocalStorage } from 'node:async_hooks';
import { errorReporter } from '../bus/report-error.js';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { Bus, type BusHandlers } from '../bus/bus.js';
import { ClosedError, InvalidValueError, LoadTimeoutError, PublishError } from '../bus/errors.js';
import type { GapCause } from '../bus/reader.js';
import { assertKey, type DecodedEntry } from '../bus/wire.js';
import { newStats, type CacheEvents, type CacheStats, type ClearCause, type DropReason } from './events.js';
import { durationMs, resolveOptions, type CacheOptions, type Duration, type Logger, type ResolvedOptions } from './options.js';
import { createStore } from './policies/index.js';
import { RelayClient, resolveRelayMode } from './relay-client.js';
import type { EntityDefinition } from '../bus/entities.js';
import { DependencyGraph } from './dependencies.js';
import { entityOf, type EntityHandle, type Row, type RowShape } from './entity.js';
import { cacheOpenHooks } from './open-hooks.js';
import { poolOf } from './pg-pool.js';
import { runBatch, type CacheCore, type InvalidationInput, type Scope } from './scope.js';
import { runTransaction, type Transaction, type TransactionDb, type TransactionOptions } from './transaction.js';
import { kStaleSamplerDefaults, StaleSampler } from './stale-sampler.js';
import type { EvictReason, LocalStore } from './policies/types.js';

/** A value, or a promise of it: `get` answers a local hit synchronously; `await` works on both. */
export type Awaitable<T> = T | Promise<T>;
/**
 * Loads a missing value. `undefined` means "nothing to cache" (returned, not stored); any other
 * value, `null` included, is stored: `null` caches "there is no such thing" until the key is
 * invalidated like any other value.
 */
export type Loader<V> = () => Awaitable<V | undefined>;
/** What a cache can hold: anything but `undefined` (`null` included). */
export type Cacheable = {} | null;

export interface EntryOptions {
  /** Tags of the entry; `invalidateTags` drops every entry carrying one of them. */
  readonly tags?: readonly string[];
  /** Time to live of this entry: ms, or a string such as `'30s'`, `'1h'` (overrides options.ttl). */
  readonly ttl?: Duration;
  /** Longest this entry's loader may take (overrides options.timeout); see LoadTimeoutError. */
  readonly timeout?: Duration;
  /**
   * Keys this value is derived from: invalidating any of them (here or in any worker) drops this
   * entry too, transitively, and discards its load if it is still in flight (docs/dependencies.md).
   */
  readonly dependsOn?: readonly string[];
}

interface Flight<V> {
  readonly promise: Promise<V | undefined>;
  readonly tags: readonly string[] | undefined;
  /** Set when an invalidation of the key (or a tag, or a clear) overtook the load: its result is not stored. */
  poisoned: boolean;
}

const EMPTY: readonly string[] = [];

/** Reasons a cache holds off serving local entries (bits of #holds). */
const kHoldClosed = 1;
const kHoldSourceClosed = 2;
const kHoldBacklog = 4;

/**
 * A worker's local cache kept coherent by the namespace's invalidation stream.
 * Create it with `createCache`.
 */
export class Cache<V extends Cacheable = Cacheable> extends EventEmitter<CacheEvents> {
  readonly namespace: string;
  readonly stats: CacheStats = newStats();
  /** What cached keys are derived from; invalidations drop dependents transitively (docs/dependencies.md). */
  readonly dependencies = new DependencyGraph();
  readonly #scopes = new AsyncLocalStorage<Scope<V>>();
  readonly #onClose: (() => Promise<void>)[] = [];
  #core: CacheCore<V> | undefined;
  readonly #o: ResolvedOptions<V>;
  readonly #store: LocalStore<V>;
  readonly #flights = new Map<string, Flight<V>>();
  readonly #tagKeys = new Map<string, Set<string>>();
  readonly #keyTags = new Map<string, readonly string[]>();
  #bus: Bus | undefined;
  #relay: RelayClient | undefined;
  /**
   * performance.now() past which local entries are not served (I3): the send time of the last
   * read that proved the reader caught up, plus maxStaleMs. Checked on every hit, so neither a
   * blocked event loop nor a frozen process can outlive it. Infinity for a local-only cache;
   * -Infinity while held (closed, relay hub closed, unpublished invalidations pending).
   */
  #until = Infinity;
  #proofAt = performance.now();
  /** Reasons local entries are not served whatever the proof says. */
  #holds = 0;
  /** What the last `servable` event said (events only; serving never depends on it). */
  #servableSaid = true;
  #watchdog: NodeJS.Timeout | undefined;
  #emitHits = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #report = errorReporter(this as unknown as EventEmitter, () => `cachebus:${this.namespace}`, () => this.#o.logger);
  #sampler: StaleSampler<V> | undefined;
  #missHook: ((key: string, loader: Loader<V>) => Loader<V>) | undefined;

  /** @internal use createCache */
  constructor(options: CacheOptions<V>) {
    super();
    this.#o = resolveOptions(options);
    this.dependencies.onRuleError = (err) => this.#error(err);
    this.namespace = this.#o.namespace;
    // The policies hold any value but undefined (null included); their `V extends {}` is lru-cache's.
    this.#store = createStore<V & {}>(this.#o.policy, {
      maxEntries: this.#o.maxEntries,
      maxBytes: this.#o.maxBytes,
      sizeOf: this.#o.sizeOf,
      ttl: this.#o.ttl,
      onEvict: (key, _value, reason) => this.#onEvict(key, reason),
    }) as LocalStore<V>;
    const track = (): void => {
      queueMicrotask(() => { this.#emitHits = this.listenerCount('hit') + this.listenerCount('miss') > 0; });
    };
    const untyped = this as EventEmitter;
    untyped.on('newListener', track);
    untyped.on('removeListener', track);
    const rate = this.#o.staleSampleRate ?? kStaleSamplerDefaults.staleSampleRate;
    if (rate > 0) this.#installSampler(rate);
  }

  /** @internal */
  async open(): Promise<this> {
    const o = this.#o;
    if (o.redis === false) return this;
    this.#refreshUntil();
    const relay = resolveRelayMode(o.relay);
    const handlers: BusHandlers = {
      onEntry: (e) => this.#onEntry(e),
      onHint: (e) => this.#onHint(e),
      onGap: (cause, detail) => this.#onGap(cause, detail),
      onBadEntry: (reason, id, message) => {
        this.stats.badEntries[reason]++;
        this.#emitSafe('badEntry', { reason, id, message });
      },
      onStatus: (status, previous) => {
        if (!this.#closed) this.#hold(kHoldSourceClosed, status === 'closed'); // a closed hub proves nothing more
        this.#emitSafe('status', { status, previous });
      },
      onCaughtUp: (at) => {
        if (at > this.#proofAt) this.#proofAt = at;
        if ((this.#holds & kHoldSourceClosed) !== 0 && at > Number.NEGATIVE_INFINITY) this.#holds &= ~kHoldSourceClosed; // a new proof: a source again
        this.#refreshUntil();
        if (!this.#servableSaid) this.#checkServable();
      },
      onError: (err) => this.#error(err),
    };
    if (relay !== false) {
      // Relay mode: the host's hub reads (undefined when the hub advises reading directly).
      this.#relay = await RelayClient.open(relay, {
        prefix: o.prefix, namespace: o.namespace, origin: () => this.#bus?.origin, maxStaleMs: o.maxStaleMs,
        connectTimeoutMs: o.connectTimeoutMs ?? 10_000, auto: o.relay === 'auto', secret: o.secret,
      }, handlers);
    }
    this.#bus = await Bus.open(
      {
        redis: o.redis, namespace: o.namespace, prefix: o.prefix, secret: o.secret,
        maxEntryBytes: o.maxEntryBytes, streamMaxLen: o.streamMaxLen, streamMaxAgeMs: o.streamMaxAgeMs,
        readCount: o.readCount, blockMs: o.blockMs, connectTimeoutMs: o.connectTimeoutMs,
        publishOnly: this.#relay !== undefined,
        onBacklog: (pending) => this.#hold(kHoldBacklog, pending),
        wake: o.wake,
      },
      handlers,
    ).catch((err: unknown) => { this.#relay?.close(); throw err; });
    const every = Math.max(5, Math.min(1000, Math.floor(o.maxStaleMs / 10)));
    this.#watchdog = setInterval(() => this.#checkServable(), every);
    this.#watchdog.unref();
    for (const hook of cacheOpenHooks) {
      const dispose = await hook(this as unknown as Cache<{}>).catch((err: unknown) => { this.#error(err); });
      if (dispose) this.#onClose.push(dispose);
    }
    return this;
  }

  /** @internal Throws InvalidKeyError unless this cache accepts `key` (validation before any effect). */
  assertKey(key: string): void {
    this.#checkKey(key);
  }

  /**
   * @internal Reports a background error the way the cache reports its own: the `error` event
   * when someone listens, else options.logger, else stderr (write-behind and entities use it).
   */
  reportError(err: unknown): void {
    this.#error(err);
  }

  /** @internal options.logger, if any (entities send their warnings to its `warn`). */
  get logger(): Logger | undefined { return this.#o.logger; }

  /** The bus (undefined for a local-only cache). */
  get bus(): Bus | undefined { return this.#bus; }
  /** How this cache takes invalidations: from a relay hub (`'ipc'`, `'broadcast'`) or its own reader (`false`). */
  get relayMode(): 'ipc' | 'broadcast' | false { return this.#relay?.mode ?? false; }
  /** Local entries. */
  get size(): number { return this.#store.size; }
  /** Local bytes, as measured by sizeOf (0 without maxBytes). */
  get bytes(): number { return this.#store.bytes; }
  /** false while the bus is not provably current (I3): local entries are not served. */
  get servable(): boolean { return this.#isServable(); }
  /** The stale-read sampler (undefined when options.staleSampleRate is 0). */
  get staleSampler(): StaleSampler<V> | undefined { return this.#sampler; }

  /**
   * Read-through: the local value on a hit (synchronously), else one load per key per process
   * (single-flight). A load overtaken by an invalidation of its key, one of its tags or a clear
   * is returned to its callers but not stored (I1). `undefined` from the loader is not stored;
   * `null` is (a cached "not found", dropped by an invalidation like any value).
   * The result type is the loader's (`T`, within the cache's `V`): the cache trusts that one key
   * always holds one type, as Map-like caches do; it does not check values at run time.
   */
  get<T extends V = V>(key: string, loader: Loader<T>, options?: EntryOptions): Awaitable<T | undefined> {
    const v = this.#store.get(key);
    if (v !== undefined && (this.#until === Infinity || performance.now() <= this.#until)) {
      this.stats.hits++;
      if (this.#emitHits) this.emit('hit', key);
      return v as T; // the type the caller's loader gives (a cast: no code)
    }
    return this.#miss(key, loader, options) as Promise<T | undefined>;
  }

  /** The local value if present and servable; never loads. Counts a hit or a miss. */
  peek(key: string): V | undefined {
    const v = this.#isServable() ? this.#store.get(key) : undefined;
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
    if (options?.ttl !== undefined) durationMs(options.ttl, 'ttl'); // before any effect
    if (this.#scopes.getStore()?.set?.(key, value, options)) return; // a transaction keeps it until COMMIT
    this.#poison(key);
    this.#put(key, value, options);
    await this.#publish({ keys: [key] });
  }

  /**
   * @internal Stores a value in this process only, poisoning its loads in flight, for a value
   * whose invalidation a script already appended to the stream atomically with the write
   * (write-behind). Ignores batch and transaction scopes (the write is durable at once).
   */
  setLocal(key: string, value: V): void {
    this.#assertOpen();
    this.#checkKey(key);
    this.#poison(key);
    this.#put(key, value, undefined);
  }

  /** Drops the keys here at once; resolves once the invalidation is in the stream. */
  async invalidate(...keys: string[]): Promise<void> {
    this.#assertOpen();
    for (const k of keys) this.#checkKey(k);
    this.applyInvalidation(keys, EMPTY, 'invalidate');
    await this.#publish({ keys });
  }

  /**
   * Whether a local value is present and servable (what a `get` would answer without loading).
   * Never loads, counts no hit or miss, records no access.
   */
  has(key: string): boolean {
    return this.#isServable() && this.#store.peek(key) !== undefined;
  }

  /** `invalidate(key)` under the name Map users look for: drops it here and in every worker. */
  delete(key: string): Promise<void> {
    return this.invalidate(key);
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
      this.#hold(kHoldClosed, true);
      clearInterval(this.#watchdog);
      this.#sampler?.close();
      this.#relay?.close();
      await this.#bus?.close();
      for (const fn of this.#onClose.splice(0)) await fn().catch((err: unknown) => this.#error(err));
      this.#clearLocal('close');
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * @internal Wraps the loader of every miss, before single-flight and transactions: write-behind
   * entities read their pending overlay first (invariant I6). The hit path never sees it.
   */
  setMissHook(hook: ((key: string, loader: Loader<V>) => Loader<V>) | undefined): void {
    this.#missHook = hook;
  }

  /**
   * Drops keys and tagged entries locally and poisons their in-flight loads. The single place
   * every invalidation (local, remote, transactional) goes through. Returns the number dropped.
   */
  applyInvalidation(keys: readonly string[], tags: readonly string[], reason: DropReason): number {
    // Dependents are computed before anything is dropped (dropping forgets a key's edges).
    const dependents = this.dependencies.active ? this.#dependentsOf(keys, tags) : EMPTY;
    let dropped = 0;
    for (const k of keys) if (this.#drop(k, reason)) dropped++;
    for (const t of tags) dropped += this.#dropTag(t, reason);
    for (const k of dependents) if (this.#drop(k, 'dependency')) dropped++;
    return dropped;
  }

  /**
   * Collects the invalidations made inside `fn` (in its async context) into one published entry;
   * local drops still happen at once. Resolves with `fn`'s result once the entry is in the stream.
   * Nested in a batch or a transaction, it joins the outer one.
   */
  batch<T>(fn: () => Awaitable<T>): Promise<T> {
    this.#assertOpen();
    return runBatch(this.#internals(), fn);
  }

  /**
   * Runs `fn` in a Postgres transaction on `db` (a pool, or a client not in a transaction;
   * omitted: options.pg). Invalidations made inside are published as one entry only after COMMIT
   * succeeds; values read or set inside stay private to the transaction (docs/transactions.md).
   */
  transaction<T>(fn: (tx: Transaction<V>) => Promise<T> | T, options?: TransactionOptions): Promise<T>;
  transaction<T>(db: TransactionDb, fn: (tx: Transaction<V>) => Promise<T> | T, options?: TransactionOptions): Promise<T>;
  transaction<T>(
    a: TransactionDb | ((tx: Transaction<V>) => Promise<T> | T),
    b?: ((tx: Transaction<V>) => Promise<T> | T) | TransactionOptions,
    c?: TransactionOptions,
  ): Promise<T> {
    this.#assertOpen();
    const core = this.#internals();
    if (typeof a === 'function') return runTransaction(core, poolOf(core, this.#o.pg), a, b as TransactionOptions | undefined);
    return runTransaction(core, a, b as (tx: Transaction<V>) => Promise<T> | T, c);
  }

  /**
   * Registers a Postgres table (read-through by key, batched loads, write-through) and returns its
   * handle; with a name, returns the handle of a registered entity (docs/entities.md).
   */
  entity<R extends RowShape = Row>(definition: EntityDefinition | string): EntityHandle<R> {
    const core = this.#internals() as unknown as CacheCore<{}>;
    return entityOf<R>(core, definition, () => poolOf(core, this.#o.pg));
  }

  // ---- internals -------------------------------------------------------------------------

  /** Dependents of invalidated keys, of the entries and loads carrying invalidated tags. */
  #dependentsOf(keys: readonly string[], tags: readonly string[]): string[] {
    if (tags.length === 0) return this.dependencies.dependentsOf(keys);
    const roots = new Set(keys);
    for (const t of tags) {
      const tagged = this.#tagKeys.get(t);
      if (tagged !== undefined) for (const k of tagged) roots.add(k);
    }
    for (const [k, f] of this.#flights) if (f.tags?.some((t) => tags.includes(t))) roots.add(k);
    return this.dependencies.dependentsOf(roots);
  }

  /** What batch, transaction and entity code uses beyond the public API (scope.ts). */
  #internals(): CacheCore<V> {
    this.#core ??= {
      cache: this,
      scopes: this.#scopes,
      publish: (inv) => this.#publish(inv, true),
      peek: (key) => (this.#isServable() ? this.#store.peek(key) : undefined),
      tagsOf: (key) => this.#keyTags.get(key),
      apply: (keys, tags, reason) => this.applyInvalidation(keys, tags, reason),
      clearLocal: () => { this.#clearLocal('local'); },
      onClose: (fn) => { this.#onClose.push(fn); },
    };
    return this.#core;
  }

  /**
   * Swaps in a `get` that picks hits for the stale-read check. Installed only when the rate is
   * above 0, the way lru-cache swaps function fields at construction: the default `get` (on
   * the prototype) stays untouched, so a rate of 0 costs nothing on the hit path. Its hit
   * branch must stay in step with `get`'s.
   */
  #installSampler(rate: number): void {
    const store = this.#store;
    this.#sampler = new StaleSampler<V>({
      rate,
      concurrency: this.#o.staleSampleConcurrency ?? kStaleSamplerDefaults.staleSampleConcurrency,
      check: this.#o.staleCheck,
      current: (k) => store.peek(k),
    });
    this.get = this.#sampledGet;
  }

  /** `get` with the stale-read sampler: the same hit branch, plus one countdown per hit. */
  #sampledGet<T extends V = V>(key: string, loader: Loader<T>, options?: EntryOptions): Awaitable<T | undefined> {
    const v = this.#store.get(key);
    if (v !== undefined && (this.#until === Infinity || performance.now() <= this.#until)) {
      this.stats.hits++;
      if (this.#emitHits) this.emit('hit', key);
      const sampler = this.#sampler!;
      if (--sampler.countdown <= 0) sampler.sample(key, v, this.#missHook ? this.#missHook(key, loader) : loader); // overlay first (I6)
      return v as T;
    }
    return this.#miss(key, loader, options) as Promise<T | undefined>;
  }

  #miss(key: string, loader: Loader<V>, options: EntryOptions | undefined): Promise<V | undefined> {
    this.stats.misses++;
    if (this.#emitHits) this.emit('miss', key);
    if (this.#closed) return Promise.reject(new ClosedError());
    let timeout: number | undefined;
    try {
      this.#checkKey(key);
      if (options?.ttl !== undefined) durationMs(options.ttl, 'ttl');
      const t = options?.timeout ?? this.#o.timeout;
      timeout = t === undefined ? undefined : durationMs(t, 'timeout');
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#missHook !== undefined) loader = this.#missHook(key, loader); // write-behind overlay first (I6)
    const scope = this.#scopes.getStore();
    if (scope?.get !== undefined) return scope.get(key, loader, options); // loads in a transaction stay private
    if (!this.#isServable()) this.stats.unservableReads++;
    const existing = this.#flights.get(key);
    if (existing !== undefined) return existing.promise;
    // Linked while loading, so that an invalidation of a source poisons this load too (I1).
    if (options?.dependsOn !== undefined) this.dependencies.link(key, options.dependsOn);
    const started = performance.now();
    let resolveFlight!: (v: V | undefined) => void, rejectFlight!: (e: unknown) => void;
    const promise = new Promise<V | undefined>((res, rej) => { resolveFlight = res; rejectFlight = rej; });
    const flight: Flight<V> = { promise, tags: options?.tags, poisoned: false };
    this.#flights.set(key, flight);
    this.stats.loads++;
    /** Retires the flight; a load that stored nothing leaves no dependency edges behind. */
    const settle = (stored: boolean): void => {
      // Another load of the key may have started since (this one was poisoned): its edges stay.
      if (!stored && options?.dependsOn !== undefined && this.#store.peek(key) === undefined && (this.#flights.get(key) ?? flight) === flight) {
        this.dependencies.unlink(key);
      }
      if (this.#flights.get(key) === flight) this.#flights.delete(key);
    };
    void (async () => {
      let stored = false;
      try {
        const value = await (timeout === undefined ? loader() : this.#timed(key, loader, timeout));
        if (!flight.poisoned && this.#isServable() && value !== undefined) {
          this.#put(key, value, options);
          stored = true;
        } else if (flight.poisoned) {
          this.stats.loadsDiscarded++;
        }
        settle(stored);
        this.#emitSafe('load', { key, durationMs: performance.now() - started, stored });
        resolveFlight(value);
      } catch (error) {
        settle(false);
        this.stats.loadErrors++;
        this.#emitSafe('load', { key, durationMs: performance.now() - started, stored, error });
        rejectFlight(error);
      }
    })();
    return promise;
  }

  /** The loader's result, or LoadTimeoutError once `ms` have passed (its late result is dropped). */
  #timed(key: string, loader: Loader<V>, ms: number): Promise<V | undefined> {
    const load = Promise.resolve(loader()); // a loader that throws at once throws here (no timer left)
    return new Promise<V | undefined>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.stats.loadTimeouts++;
        reject(new LoadTimeoutError(key, ms));
      }, ms);
      load.then((v) => { clearTimeout(timer); resolve(v); }, (e: unknown) => { clearTimeout(timer); reject(e); });
    });
  }

  #put(key: string, value: V, options: EntryOptions | undefined): void {
    if (this.#keyTags.size > 0) this.#untag(key);
    let ok: boolean;
    try {
      const ttl = options?.ttl;
      ok = this.#store.set(key, value, ttl === undefined || typeof ttl === 'number' ? ttl : durationMs(ttl, 'ttl'));
    } catch (err) {
      throw new InvalidValueError(`cannot measure the value of ${JSON.stringify(key)} (options.sizeOf threw)`, { cause: err });
    }
    if (this.dependencies.size > 0) this.dependencies.unlink(key);
    if (ok && options?.dependsOn !== undefined) this.dependencies.link(key, options.dependsOn);
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
    if (this.dependencies.size > 0) this.dependencies.unlink(key);
    if (had) {
      this.stats.keysDropped++;
      if (this.listenerCount('drop') > 0) this.#emitSafe('drop', { key, reason });
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
    this.dependencies.clearLinks();
    this.stats.clears[cause]++;
    this.#emitSafe('clear', { cause, entries: n });
    return n;
  }

  #onEvict(key: string, reason: EvictReason): void {
    this.stats.evictions[reason]++;
    if (this.#keyTags.size > 0) this.#untag(key);
    if (this.dependencies.size > 0) this.dependencies.unlink(key);
    if (this.listenerCount('drop') > 0) this.#emitSafe('drop', { key, reason });
  }

  /**
   * A wake-up hint (option wake: 'pubsub'): the drop only, early. The stream entry still comes
   * and is applied (and counted, and reported as `received`) by #onEntry; dropping twice is harmless.
   */
  #onHint(e: DecodedEntry): void {
    if (e.clear) this.#clearLocal('remote');
    else this.applyInvalidation(e.keys, e.tags, e.tags.length > 0 ? 'tag' : 'invalidate');
  }

  #onEntry(e: DecodedEntry): void {
    this.stats.entriesReceived++;
    const dropped = e.clear ? this.#clearLocal('remote') : this.applyInvalidation(e.keys, e.tags, e.tags.length > 0 ? 'tag' : 'invalidate');
    this.#emitSafe('received', {
      id: e.id, origin: e.origin, keys: e.keys.length, tags: e.tags.length, clear: e.clear,
      lagMs: Date.now() - e.time, dropped,
    });
  }

  #onGap(cause: GapCause, detail: string): void {
    this.stats.gaps[cause]++;
    this.#clearLocal('gap');
    this.#emitSafe('gap', { cause, detail });
  }

  #isServable(): boolean {
    return this.#until === Infinity || performance.now() <= this.#until;
  }

  #refreshUntil(): void {
    this.#until = this.#holds !== 0 ? -Infinity : this.#proofAt + this.#o.maxStaleMs;
  }

  #hold(reason: number, on: boolean): void {
    this.#holds = on ? this.#holds | reason : this.#holds & ~reason;
    if (this.#o.redis !== false || reason === kHoldClosed) this.#refreshUntil();
    this.#checkServable();
  }

  /** Emits the `servable` event on a change (metrics and logs; serving itself reads #until). */
  #checkServable(): void {
    const servable = !this.#closed && this.#isServable();
    if (servable !== this.#servableSaid) {
      this.#servableSaid = servable;
      this.#emitSafe('servable', { servable, staleForMs: performance.now() - this.#proofAt });
    }
  }

  /**
   * Emits to listeners on the invalidation and load paths; a listener that throws is reported
   * as an error and never changes what is dropped, stored or published.
   */
  #emitSafe<K extends keyof CacheEvents>(event: K, ...args: CacheEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: CacheEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.#error(err);
    }
  }

  async #publish(inv: InvalidationInput, bypassScope = false): Promise<void> {
    const scope = bypassScope ? undefined : this.#scopes.getStore();
    if (scope !== undefined) return scope.hold(inv); // a batch or transaction publishes it later
    const bus = this.#bus;
    if (bus === undefined) return;
    this.stats.invalidationsPublished++;
    try {
      const ids = await bus.publish(inv);
      this.stats.entriesPublished += ids.length;
      this.#emitSafe('published', { keys: inv.keys?.length ?? 0, tags: inv.tags?.length ?? 0, clear: inv.clear ?? false, ids });
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
    this.#report(err);
  }

}

/** Creates a cache, connects its bus and captures the stream's end before it serves. */
export async function createCache<V extends Cacheable = Cacheable>(options: CacheOptions<V>): Promise<Cache<V>> {
  const cache = new Cache<V>(options);
  return cache.open();
}
