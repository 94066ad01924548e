import type { AsyncLocalStorage } from 'node:async_hooks';
import { InvalidOptionError } from '../bus/errors.js';
import type { PgInput } from '../bus/pg-input.js';
import type { DropReason } from './events.js';
import type { Awaitable, Cacheable, CacheView, EntryOptions, Loader } from './types.js';

/** An invalidation as the cache publishes it. */
export interface InvalidationInput {
  readonly keys?: readonly string[] | undefined;
  readonly tags?: readonly string[] | undefined;
  readonly clear?: boolean | undefined;
}

/**
 * A batch or a transaction in progress, found through AsyncLocalStorage by the cache calls made
 * inside it. `hold` receives what the cache would have published.
 */
export interface Scope<V> {
  hold(inv: InvalidationInput): void;
  /** Transactions: a `set` made inside stays private until COMMIT. true when handled. */
  set?(key: string, value: V, options: EntryOptions | undefined): boolean;
  /** Transactions: a miss made inside loads privately (never into the shared cache). */
  get?(key: string, loader: Loader<V>, options: EntryOptions | undefined): Promise<V | undefined>;
}

/**
 * What batch, transaction and entity code needs from the cache beyond its public API. Built by
 * the cache; not exported to users.
 */
export interface CacheCore<V extends Cacheable> {
  readonly cache: CacheView<V>;
  /** options.pg: the Postgres of entities and transactions (cachebus/postgres opens it on first use). */
  readonly pg: PgInput | undefined;
  readonly scopes: AsyncLocalStorage<Scope<V>>;
  /** Publishes, bypassing any scope (the caller already applied it locally). */
  publish(inv: InvalidationInput): Promise<void>;
  /** The shared local value if present and servable; no stats, no access recorded. */
  peek(key: string): V | undefined;
  /** Tags of a shared local entry. */
  tagsOf(key: string): readonly string[] | undefined;
  /** Drops keys/tags locally (and their dependents) without publishing. */
  apply(keys: readonly string[], tags: readonly string[], reason: DropReason): number;
  /** Clears the local cache without publishing. */
  clearLocal(): void;
  /** ClosedError once the cache is closed. */
  assertOpen(): void;
  /** Runs `fn` when the cache closes (after the bus is closed). */
  onClose(fn: () => Promise<void>): void;
}

const cores = new WeakMap<object, CacheCore<any>>();

/** @internal Called by the Cache constructor: what coreOf(cache) returns. */
export function attachCore(cache: object, core: CacheCore<any>): void {
  cores.set(cache, core);
}

/**
 * The internals of a cache, for the capabilities that attach from outside (cachebus/postgres):
 * they import this module, the cache never imports them.
 */
export function coreOf<V extends Cacheable>(cache: object): CacheCore<V> {
  const core = cores.get(cache);
  if (core === undefined) throw new InvalidOptionError('expected a cache made by createCache()');
  return core as CacheCore<V>;
}

/** Invalidations collected by a batch or a transaction, merged into one. */
export class HeldInvalidations {
  readonly keys = new Set<string>();
  readonly tags = new Set<string>();
  clear = false;

  add(inv: InvalidationInput): void {
    if (inv.keys) for (const k of inv.keys) this.keys.add(k);
    if (inv.tags) for (const t of inv.tags) this.tags.add(t);
    if (inv.clear) this.clear = true;
  }

  get empty(): boolean {
    return this.keys.size === 0 && this.tags.size === 0 && !this.clear;
  }

  take(): { keys: string[]; tags: string[]; clear: boolean } {
    const out = { keys: [...this.keys], tags: [...this.tags], clear: this.clear };
    this.keys.clear();
    this.tags.clear();
    this.clear = false;
    return out;
  }
}

/**
 * `cache.batch(fn)`: invalidations made inside `fn` (in its async context) still drop locally at
 * once, but are published as one invalidation (one stream entry, unless larger than
 * maxEntryBytes) when `fn` settles, whether it resolves or throws. A batch inside a batch or a
 * transaction joins the outer one.
 */
export async function runBatch<V extends {} | null, T>(core: CacheCore<V>, fn: () => Awaitable<T>): Promise<T> {
  if (core.scopes.getStore() !== undefined) return await fn();
  const held = new HeldInvalidations();
  const scope: Scope<V> = { hold: (inv) => held.add(inv) };
  let result: T;
  try {
    result = await core.scopes.run(scope, fn);
  } catch (err) {
    if (!held.empty) await core.publish(held.take()).catch(() => undefined); // fn's error wins
    throw err;
  }
  if (!held.empty) await core.publish(held.take());
  return result;
}
