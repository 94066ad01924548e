import { AsyncLocalStorage } from 'node:async_hooks';
import { errorReporter } from '../bus/report-error.js';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { Bus } from '../bus/bus.js';
import { ClosedError, InvalidValueError, PublishError } from '../bus/errors.js';
import { assertKey } from '../bus/wire.js';
import { EMPTY, LocalEntries } from './entries.js';
import { newStats, type CacheEvents, type CacheStats, type DropReason } from './events.js';
import { durationMs, resolveOptions, type CacheOptions, type Logger, type ResolvedOptions } from './options.js';
import { createStore } from './policies/index.js';
import type { RelayClient } from './relay-client.js';
import { DependencyGraph } from './dependencies.js';
import { openOverlay } from './overlay.js';
import { attachCore, runBatch, type CacheCore, type InvalidationInput, type Scope } from './scope.js';
import type { Awaitable, Cacheable, EntryOptions, Loader } from './types.js';
import { kHoldClosed, Servability } from './servable.js';
import { openSource, readerHandlers } from './source.js';
import { kStaleSamplerDefaults, StaleSampler } from './stale-sampler.js';
import type { LocalStore } from './policies/types.js';

export type { Awaitable, Cacheable, EntryOptions, Loader } from './types.js';

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
  /** The same store as #entries.store: the hit path reads it directly. */
  readonly #store: LocalStore<V>;
  readonly #entries: LocalEntries<V>;
  readonly #fresh: Servability;
  #bus: Bus | undefined;
  #relay: RelayClient | undefined;
  /** Servability's deadline (servable.ts, I3), copied here for the hit path: checked on every hit. */
  #until = Infinity;
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
    this.#fresh = new Servability({
      maxStaleMs: this.#o.maxStaleMs,
      local: this.#o.redis === false,
      setUntil: (until) => { this.#until = until; },
      changed: (servable, staleForMs) => this.#emitSafe('servable', { servable, staleForMs }),
      closed: () => this.#closed,
    });
    const entries = new LocalEntries<V>(this.dependencies, {
      stats: this.stats,
      emitSafe: (event, ...args) => this.#emitSafe(event, ...args),
      listensToDrops: () => this.listenerCount('drop') > 0,
      isServable: () => this.#fresh.isServable(),
    });
    // The policies hold any value but undefined (null included); their `V extends {}` is lru-cache's.
    this.#store = entries.store = createStore<V & {}>(this.#o.policy, {
      maxEntries: this.#o.maxEntries,
      maxBytes: this.#o.maxBytes,
      sizeOf: this.#o.sizeOf,
      ttl: this.#o.ttl,
      onEvict: (key, _value, reason) => entries.onEvict(key, reason),
    }) as LocalStore<V>;
    this.#entries = entries;
    const track = (): void => {
      queueMicrotask(() => { this.#emitHits = this.listenerCount('hit') + this.listenerCount('miss') > 0; });
    };
    const untyped = this as EventEmitter;
    untyped.on('newListener', track);
    untyped.on('removeListener', track);
    attachCore(this, this.#internals()); // for the capabilities that attach from outside (coreOf)
    const rate = this.#o.staleSampleRate ?? kStaleSamplerDefaults.staleSampleRate;
    if (rate > 0) this.#installSampler(rate);
  }

  /** @internal */
  async open(): Promise<this> {
    const o = this.#o;
    if (o.redis === false) return this;
    this.#fresh.refresh();
    const handlers = readerHandlers<V>({
      stats: this.stats, entries: this.#entries, fresh: this.#fresh,
      emitSafe: (event, ...args) => this.#emitSafe(event, ...args),
      error: (err) => this.#error(err),
      closed: () => this.#closed,
    });
    ({ bus: this.#bus, relay: this.#relay } = await openSource(o, handlers, this.#fresh));
    this.#fresh.start();
    // Write-behind's read side (I6): every cache with a bus reads pending rows first.
    const dispose = await openOverlay(this).catch((err: unknown) => { this.#error(err); });
    if (dispose) this.#onClose.push(dispose);
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
    this.#entries.poison(key);
    this.#entries.put(key, value, options);
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
    this.#entries.poison(key);
    this.#entries.put(key, value, undefined);
  }

  /** Drops the keys here at once; resolves once the invalidation is in the stream. */
  async invalidate(...keys: string[]): Promise<void> {
    this.#assertOpen();
    if (keys.length === 0) return; // nothing to drop, nothing to publish
    for (const k of keys) this.#checkKey(k);
    // Published first, dropped here next, both before this returns: a same-host hint
    // (wake: 'host') leaves before the local drop's work (issue 15).
    const published = this.#publish({ keys });
    published.catch(() => undefined); // rejects to the caller below; not unhandled should the drop throw
    this.applyInvalidation(keys, EMPTY, 'invalidate');
    await published;
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
    if (tags.length === 0) return;
    for (const t of tags) this.#checkKey(t, 'tag');
    const published = this.#publish({ tags }); // as in invalidate()
    published.catch(() => undefined);
    this.applyInvalidation(EMPTY, tags, 'tag');
    await published;
  }

  /** Clears every cache of the namespace. */
  async clear(): Promise<void> {
    this.#assertOpen();
    this.#entries.clear('local');
    await this.#publish({ clear: true });
  }

  /** Stops reading, waits for pending publishes, closes connections cachebus opened. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#fresh.hold(kHoldClosed, true);
      this.#fresh.stop();
      this.#sampler?.close();
      this.#relay?.close();
      await this.#bus?.close();
      for (const fn of this.#onClose.splice(0)) await fn().catch((err: unknown) => this.#error(err));
      this.#entries.clear('close');
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
    return this.#entries.apply(keys, tags, reason);
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

  // ---- internals -------------------------------------------------------------------------

  /** What batch, transaction and entity code uses beyond the public API (scope.ts). */
  #internals(): CacheCore<V> {
    this.#core ??= {
      cache: this,
      scopes: this.#scopes,
      publish: (inv) => this.#publish(inv, true),
      peek: (key) => (this.#isServable() ? this.#store.peek(key) : undefined),
      tagsOf: (key) => this.#entries.tagsOf(key),
      apply: (keys, tags, reason) => this.applyInvalidation(keys, tags, reason),
      clearLocal: () => { this.#entries.clear('local'); },
      onClose: (fn) => { this.#onClose.push(fn); },
      assertOpen: () => this.#assertOpen(),
      pg: this.#o.pg,
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
    return this.#entries.load(key, loader, options, timeout);
  }

  #isServable(): boolean {
    return this.#fresh.isServable();
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
