import { performance } from 'node:perf_hooks';
import { InvalidValueError, LoadTimeoutError } from '../bus/errors.js';
import type { DependencyGraph } from './dependencies.js';
import type { CacheEvents, CacheStats, ClearCause, DropReason } from './events.js';
import { durationMs } from './options.js';
import { indexKey, unindexKey, type InverseIndex } from './inverse-index.js';
import type { EvictReason, LocalStore } from './policies/types.js';
import type { Cacheable, EntryOptions, Loader } from './types.js';

// The local side of a cache, apart from cache.ts (its public API, servability and bus wiring):
// entries with their tags and dependency edges, and the loads in flight. Invariant I1 (no stale
// set) lives here: every drop poisons the loads of what it drops, and a poisoned load is
// returned to its callers but never stored.

interface Flight<V> {
  readonly promise: Promise<V | undefined>;
  readonly tags: readonly string[] | undefined;
  /** Set when an invalidation of the key (or a tag, or a clear) overtook the load: its result is not stored. */
  poisoned: boolean;
}

export const EMPTY: readonly string[] = [];

/** What the entries report to their cache. */
export interface EntriesHost {
  readonly stats: CacheStats;
  /** Emits an event; a throwing listener is reported, never propagated. */
  emitSafe<K extends keyof CacheEvents>(event: K, ...args: CacheEvents[K]): void;
  /** Whether someone listens to `drop` (the event is built only then). */
  listensToDrops(): boolean;
  /** Whether local entries may be served (a load finishing while not servable is not stored). */
  isServable(): boolean;
}

/** The entries, tags, dependency edges and loads in flight of one cache. */
export class LocalEntries<V extends Cacheable> {
  readonly flights = new Map<string, Flight<V>>();
  readonly #tagKeys: InverseIndex = new Map();
  readonly #keyTags = new Map<string, readonly string[]>();
  readonly #deps: DependencyGraph;
  readonly #host: EntriesHost;
  /** Set right after construction: the store calls back into onEvict. */
  store!: LocalStore<V>;

  constructor(dependencies: DependencyGraph, host: EntriesHost) {
    this.#deps = dependencies;
    this.#host = host;
  }

  /** Tags of a local entry. */
  tagsOf(key: string): readonly string[] | undefined {
    return this.#keyTags.get(key);
  }

  /**
   * One load per key per process (single-flight): stored when it finishes unless an
   * invalidation overtook it (I1) or the cache is not servable. `timeout` in ms.
   */
  load(key: string, loader: Loader<V>, options: EntryOptions | undefined, timeout: number | undefined): Promise<V | undefined> {
    const existing = this.flights.get(key);
    if (existing !== undefined) return existing.promise;
    const stats = this.#host.stats;
    // Linked while loading, so that an invalidation of a source poisons this load too (I1).
    if (options?.dependsOn !== undefined) this.#deps.link(key, options.dependsOn);
    const started = performance.now();
    let resolveFlight!: (v: V | undefined) => void, rejectFlight!: (e: unknown) => void;
    const promise = new Promise<V | undefined>((res, rej) => { resolveFlight = res; rejectFlight = rej; });
    const flight: Flight<V> = { promise, tags: options?.tags, poisoned: false };
    this.flights.set(key, flight);
    stats.loads++;
    /** Retires the flight; a load that stored nothing leaves no dependency edges behind. */
    const settle = (stored: boolean): void => {
      // Another load of the key may have started since (this one was poisoned): its edges stay.
      if (!stored && options?.dependsOn !== undefined && this.store.peek(key) === undefined && (this.flights.get(key) ?? flight) === flight) {
        this.#deps.unlink(key);
      }
      if (this.flights.get(key) === flight) this.flights.delete(key);
    };
    void (async () => {
      let stored = false;
      try {
        const value = await (timeout === undefined ? loader() : this.#timed(key, loader, timeout));
        if (!flight.poisoned && this.#host.isServable() && value !== undefined) {
          this.put(key, value, options);
          stored = true;
        } else if (flight.poisoned) {
          stats.loadsDiscarded++;
        }
        settle(stored);
        this.#host.emitSafe('load', { key, durationMs: performance.now() - started, stored });
        resolveFlight(value);
      } catch (error) {
        settle(false);
        stats.loadErrors++;
        this.#host.emitSafe('load', { key, durationMs: performance.now() - started, stored, error });
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
        this.#host.stats.loadTimeouts++;
        reject(new LoadTimeoutError(key, ms));
      }, ms);
      load.then((v) => { clearTimeout(timer); resolve(v); }, (e: unknown) => { clearTimeout(timer); reject(e); });
    });
  }

  put(key: string, value: V, options: EntryOptions | undefined): void {
    if (this.#keyTags.size > 0) this.#untag(key);
    let ok: boolean;
    try {
      const ttl = options?.ttl;
      ok = this.store.set(key, value, ttl === undefined || typeof ttl === 'number' ? ttl : durationMs(ttl, 'ttl'));
    } catch (err) {
      throw new InvalidValueError(`cannot measure the value of ${JSON.stringify(key)} (options.sizeOf threw)`, { cause: err });
    }
    if (this.#deps.size > 0) this.#deps.unlink(key);
    if (ok && options?.dependsOn !== undefined) this.#deps.link(key, options.dependsOn);
    const tags = options?.tags;
    if (ok && tags !== undefined && tags.length > 0) {
      this.#keyTags.set(key, tags);
      indexKey(this.#tagKeys, key, tags);
    }
  }

  #untag(key: string): void {
    const tags = this.#keyTags.get(key);
    if (tags === undefined) return;
    this.#keyTags.delete(key);
    unindexKey(this.#tagKeys, key, tags);
  }

  /** Marks the key's load in flight (if any) as overtaken: its result will not be stored. */
  poison(key: string): void {
    const f = this.flights.get(key);
    if (f !== undefined) {
      f.poisoned = true;
      this.flights.delete(key);
    }
  }

  /**
   * Drops keys and tagged entries locally and poisons their in-flight loads. The single place
   * every invalidation (local, remote, transactional) goes through. Returns the number dropped.
   */
  apply(keys: readonly string[], tags: readonly string[], reason: DropReason): number {
    // Dependents are computed before anything is dropped (dropping forgets a key's edges).
    const dependents = this.#deps.active ? this.#dependentsOf(keys, tags) : EMPTY;
    let dropped = 0;
    for (const k of keys) if (this.#drop(k, reason)) dropped++;
    for (const t of tags) dropped += this.#dropTag(t, reason);
    for (const k of dependents) if (this.#drop(k, 'dependency')) dropped++;
    return dropped;
  }

  /** Dependents of invalidated keys, of the entries and loads carrying invalidated tags. */
  #dependentsOf(keys: readonly string[], tags: readonly string[]): string[] {
    if (tags.length === 0) return this.#deps.dependentsOf(keys);
    const roots = new Set(keys);
    for (const t of tags) {
      const tagged = this.#tagKeys.get(t);
      if (tagged !== undefined) for (const k of tagged) roots.add(k);
    }
    for (const [k, f] of this.flights) if (f.tags?.some((t) => tags.includes(t))) roots.add(k);
    return this.#deps.dependentsOf(roots);
  }

  #drop(key: string, reason: DropReason): boolean {
    this.poison(key);
    const had = this.store.delete(key);
    if (this.#keyTags.size > 0) this.#untag(key);
    if (this.#deps.size > 0) this.#deps.unlink(key);
    if (had) {
      this.#host.stats.keysDropped++;
      if (this.#host.listensToDrops()) this.#host.emitSafe('drop', { key, reason });
    }
    return had;
  }

  #dropTag(tag: string, reason: DropReason): number {
    for (const [key, f] of this.flights) {
      if (f.tags?.includes(tag)) {
        f.poisoned = true;
        this.flights.delete(key);
      }
    }
    const keys = this.#tagKeys.get(tag);
    if (keys === undefined) return 0;
    let n = 0;
    for (const k of [...keys]) if (this.#drop(k, reason)) n++;
    return n;
  }

  /** Drops every entry and poisons every load in flight. Returns the number of entries dropped. */
  clear(cause: ClearCause): number {
    const n = this.store.size;
    for (const f of this.flights.values()) f.poisoned = true;
    this.flights.clear();
    this.store.clear();
    this.#tagKeys.clear();
    this.#keyTags.clear();
    this.#deps.clearLinks();
    this.#host.stats.clears[cause]++;
    this.#host.emitSafe('clear', { cause, entries: n });
    return n;
  }

  /** The store's eviction callback: forgets the key's tags and edges. */
  onEvict(key: string, reason: EvictReason): void {
    this.#host.stats.evictions[reason]++;
    if (this.#keyTags.size > 0) this.#untag(key);
    if (this.#deps.size > 0) this.#deps.unlink(key);
    if (this.#host.listensToDrops()) this.#host.emitSafe('drop', { key, reason });
  }
}
