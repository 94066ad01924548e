import type pg from 'pg';
import { InvalidOptionError, PublishError, TransactionOutcomeUnknownError, TransactionRolledBackError } from '../../bus/errors.js';
import { forgetOutboxRows, outboxTableOf, recordInOutbox } from '../../bus/outbox/rows.js';
import { checkout, isPgPool, type Checkout } from '../../bus/pg.js';
import type { EntryOptions, Loader } from '../types.js';
import { DependencyGraph } from '../dependencies.js';
import { HeldInvalidations, type CacheCore, type InvalidationInput, type Scope } from '../scope.js';

/** What `transaction(cache, db, fn)` runs on: a pool (a client is checked out), or a client not already in a transaction. */
export type TransactionDb = pg.Pool | pg.PoolClient | pg.Client;

export interface TransactionOptions {
  /** Isolation level of the BEGIN. @defaultValue the server's default (read committed) */
  readonly isolation?: 'read committed' | 'repeatable read' | 'serializable' | undefined;
  /**
   * Also record the transaction's invalidations in the outbox table, in the same Postgres
   * transaction (one INSERT just before COMMIT): a committed change is then published even if
   * this process dies before it publishes; the sidecar's outbox relay does it (docs/outbox.md).
   * `true` uses the table `cachebus_outbox` (found through the connection's search_path); a
   * string names the table (`schema.table`). The table must exist (`installOutbox`, or
   * `cachebus install-triggers`). After this process published, it deletes its rows again.
   * @defaultValue `false`
   */
  readonly outbox?: boolean | string | undefined;
  /** @internal test hook: runs after a successful COMMIT, before anything is published. */
  readonly afterCommit?: (() => Promise<void> | void) | undefined;
}

const ISOLATION = new Set(['read committed', 'repeatable read', 'serializable']);

interface PrivateEntry<V> {
  readonly value: V;
  readonly tags: readonly string[] | undefined;
}

/**
 * A database transaction with its cache side. Invalidations made inside (through `tx` or through
 * the cache, in the transaction's async context) are held and published as one entry after
 * COMMIT succeeds; after ROLLBACK, a thrown error or a failed COMMIT they are discarded.
 * Values loaded or set inside stay private to the transaction: they may reflect uncommitted rows.
 */
export class Transaction<V extends {} | null = {} | null> implements Scope<V> {
  /** The connection the transaction runs on. */
  readonly client: pg.ClientBase;
  readonly #core: CacheCore<V>;
  /** Keys and tags invalidated or set directly: published at COMMIT. */
  readonly #held = new HeldInvalidations();
  /** Everything that may differ from the committed state: the held keys and their dependents. */
  readonly #dirty = new Set<string>();
  readonly #private = new Map<string, PrivateEntry<V>>();
  readonly #privateDeps = new DependencyGraph();
  readonly #flights = new Map<string, Promise<V | undefined>>();
  #rollbackOnly = false;
  #done = false;

  /** @internal use transaction(cache, ...) */
  constructor(core: CacheCore<V>, client: pg.ClientBase) {
    this.#core = core;
    this.client = client;
  }

  /** Runs a statement on the transaction's connection. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    return this.client.query<R>(text, values);
  }

  /**
   * Read-your-writes read: the transaction's own value, else the shared local value if nothing
   * it depends on was changed in this transaction, else `loader` (which should use `tx.query`).
   * What it loads stays private to the transaction.
   */
  get<T extends V = V>(key: string, loader: Loader<T>, options?: EntryOptions): Promise<T | undefined> {
    return this.#get(key, loader, options) as Promise<T | undefined>; // the loader's type, as cache.get
  }

  #get(key: string, loader: Loader<V>, options?: EntryOptions): Promise<V | undefined> {
    const own = this.#private.get(key);
    if (own !== undefined) return Promise.resolve(own.value);
    if (!this.#isDirty(key)) {
      const shared = this.#core.peek(key);
      if (shared !== undefined) return Promise.resolve(shared);
    }
    const inFlight = this.#flights.get(key);
    if (inFlight !== undefined) return inFlight;
    const deps = options?.dependsOn;
    if (deps !== undefined) this.#privateDeps.link(key, deps);
    // Invalidated meanwhile (in this transaction): the flight is gone from the map, not stored.
    const flight: Promise<V | undefined> = Promise.resolve().then(async () => {
      try {
        const value = await loader();
        if (value !== undefined && !this.#done && this.#flights.get(key) === flight) {
          this.#private.set(key, { value, tags: options?.tags });
        }
        return value;
      } finally {
        if (this.#flights.get(key) === flight) this.#flights.delete(key);
      }
    });
    this.#flights.set(key, flight);
    return flight;
  }

  /** Stores a value for the rest of the transaction; at COMMIT the key is invalidated everywhere. */
  set(key: string, value: V, options?: EntryOptions): boolean {
    this.#assertActive();
    this.#mark({ keys: [key] });
    this.#private.set(key, { value, tags: options?.tags });
    if (options?.dependsOn !== undefined) this.#privateDeps.link(key, options.dependsOn);
    return true;
  }

  /** Holds an invalidation until COMMIT (and drops the keys from this transaction's view now). */
  invalidate(...keys: string[]): void {
    this.#assertActive();
    this.#core.apply(keys, [], 'transaction');
    this.#mark({ keys });
  }

  /** Holds a tag invalidation until COMMIT. */
  invalidateTags(...tags: string[]): void {
    this.#assertActive();
    this.#core.apply([], tags, 'transaction');
    this.#mark({ tags });
  }

  /** Makes the transaction roll back when its function returns (nothing is published). */
  rollback(): void {
    this.#rollbackOnly = true;
  }

  get rollbackOnly(): boolean { return this.#rollbackOnly; }

  /** Scope hook: what the cache would have published inside the transaction. */
  hold(inv: InvalidationInput): void {
    this.#mark(inv);
  }

  #mark(inv: InvalidationInput): void {
    this.#held.add(inv);
    if (inv.keys !== undefined && inv.keys.length > 0) this.#dirtyKeys(inv.keys);
    if ((inv.tags !== undefined && inv.tags.length > 0) || inv.clear) {
      const tagged: string[] = [];
      for (const [k, e] of this.#private) {
        if (inv.clear || e.tags?.some((t) => inv.tags!.includes(t))) tagged.push(k);
      }
      this.#dirtyKeys(tagged);
    }
  }

  /** Marks keys and everything derived from them (shared graph and this transaction's entries). */
  #dirtyKeys(keys: readonly string[]): void {
    const graph = this.#core.cache.dependencies;
    let frontier: string[] = [...keys];
    while (frontier.length > 0) {
      const next: string[] = [];
      for (const k of [...graph.expand(frontier), ...this.#privateDeps.dependentsOf(frontier)]) {
        if (!this.#dirty.has(k)) {
          this.#dirty.add(k);
          next.push(k);
        }
        this.#private.delete(k);
        this.#flights.delete(k);
        this.#privateDeps.unlink(k);
      }
      frontier = next;
    }
  }

  #isDirty(key: string, seen = new Set<string>()): boolean {
    if (this.#held.clear || this.#dirty.has(key)) return true;
    const tags = this.#core.tagsOf(key);
    if (tags !== undefined && this.#held.tags.size > 0 && tags.some((t) => this.#held.tags.has(t))) return true;
    seen.add(key);
    for (const s of this.#core.cache.dependencies.sourcesOf(key)) {
      if (!seen.has(s) && this.#isDirty(s, seen)) return true;
    }
    return false;
  }

  #assertActive(): void {
    if (this.#done) throw new InvalidOptionError('the transaction is over: use it only inside its function');
  }

  /** @internal what COMMIT would publish (for the outbox rows written just before it). */
  heldInvalidation(): { keys: string[]; tags: string[]; clear: boolean } {
    const h = this.#held;
    return { keys: [...h.keys], tags: [...h.tags], clear: h.clear };
  }

  /**
   * @internal after COMMIT (or a COMMIT whose outcome is unknown): drop locally again (loads that
   * overlapped read the old rows), then publish. Resolves true when this call published (false:
   * nothing held, or joined an outer batch).
   */
  async committed(outer: Scope<V> | undefined): Promise<boolean> {
    this.#finish();
    if (this.#held.empty) return false;
    const inv = this.#held.take();
    if (inv.clear) this.#core.clearLocal();
    else this.#core.apply(inv.keys, inv.tags, 'transaction');
    // Inside a batch: join it. Inside another transaction (its own connection, already committed
    // here): publish now, the outer transaction's fate does not undo this one.
    if (outer !== undefined && !(outer instanceof Transaction)) {
      outer.hold(inv);
      return false;
    }
    try {
      await this.#core.publish(inv);
      return true;
    } catch (err) {
      throw new PublishError(
        `the transaction COMMITTED, but publishing its invalidation failed (other workers may serve stale values until they reload): ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  /** @internal after ROLLBACK or a failed COMMIT: nothing is published; touched keys are dropped here. */
  discarded(): void {
    this.#finish();
    const inv = this.#held.take();
    if (inv.keys.length > 0 || inv.tags.length > 0) this.#core.apply(inv.keys, inv.tags, 'transaction');
  }

  #finish(): void {
    this.#done = true;
    this.#private.clear();
    this.#flights.clear();
    this.#privateDeps.clearLinks();
  }
}

/**
 * True when a COMMIT error proves the transaction did NOT commit: Postgres answered the COMMIT
 * with an ordinary error on a live connection (a deferred constraint 23xxx, a serialization
 * failure 40xxx, ...). A lost connection (no SQLSTATE), a FATAL/PANIC, or a class 08
 * (connection), 53 (resources), 57 (operator intervention: pg_terminate_backend, shutdown),
 * 58 (system) or XX (internal) error leaves the outcome unknown: it may have committed.
 */
export function commitSurelyFailed(err: unknown, connectionError: Error | undefined): boolean {
  if (connectionError !== undefined) return false;
  const e = err as { code?: unknown; severity?: unknown };
  if (typeof e?.code !== 'string' || !/^[0-9A-Z]{5}$/.test(e.code)) return false;
  if (e.severity === 'FATAL' || e.severity === 'PANIC') return false;
  return !['08', '53', '57', '58', 'XX'].includes(e.code.slice(0, 2));
}

/**
 * Runs `fn` in a database transaction: BEGIN, `fn(tx)`, [outbox rows], COMMIT, then the held
 * invalidations are applied locally and published as one entry. ROLLBACK (a thrown error,
 * `tx.rollback()`), or a COMMIT that Postgres answers with an error or with ROLLBACK, publishes
 * nothing and drops the touched keys locally. A COMMIT whose outcome is unknown (connection lost
 * after it was sent) publishes, then throws TransactionOutcomeUnknownError.
 */
export async function runTransaction<V extends {} | null, T>(
  core: CacheCore<V>,
  db: TransactionDb,
  fn: (tx: Transaction<V>) => Promise<T> | T,
  options: TransactionOptions = {},
): Promise<T> {
  const iso = options.isolation;
  if (iso !== undefined && !ISOLATION.has(iso)) {
    throw new InvalidOptionError(`options.isolation must be one of ${[...ISOLATION].join(', ')} (got ${String(iso)})`);
  }
  const outbox = options.outbox === undefined || options.outbox === false ? undefined : outboxTableOf(options.outbox);
  const outer = core.scopes.getStore();
  // A pool (of this or any other copy of pg: by shape) gets a client of its own for the whole
  // transaction; a client passed in is guarded against 'error' events while we use it.
  let out: Checkout | undefined;
  let client: pg.ClientBase;
  let connectionError: Error | undefined;
  const onError = (err: Error): void => { connectionError ??= err; };
  if (isPgPool(db)) {
    out = await checkout(db);
    client = out.client;
  } else {
    client = db;
    client.on('error', onError);
  }
  const lost = (): Error | undefined => connectionError ?? out?.error;
  let broken: Error | undefined;
  const tx = new Transaction<V>(core, client);
  try {
    try {
      await client.query(iso === undefined ? 'BEGIN' : `BEGIN ISOLATION LEVEL ${iso.toUpperCase()}`);
    } catch (err) {
      broken = err as Error;
      throw err;
    }
    let result: T;
    let outboxIds: string[] = [];
    try {
      result = await core.scopes.run(tx, () => fn(tx));
      // Same transaction as the change: committed together, or not at all.
      if (outbox !== undefined && !tx.rollbackOnly) outboxIds = await recordInOutbox(client, outbox, core.cache.namespace, tx.heldInvalidation());
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => { broken = e; });
      tx.discarded();
      throw err;
    }
    if (tx.rollbackOnly) {
      await client.query('ROLLBACK').catch((e: Error) => { broken = e; });
      tx.discarded();
      return result;
    }
    let commit: pg.QueryResult;
    // A connection already lost before COMMIT: COMMIT is never sent, and Postgres rolls back.
    const lostBefore = lost() !== undefined;
    try {
      commit = await client.query('COMMIT');
    } catch (err) {
      if (lostBefore || commitSurelyFailed(err, lost())) {
        tx.discarded();
        throw err;
      }
      // It may have committed: over-invalidating is safe, missing an invalidation is not.
      broken = err as Error;
      let published = 'its invalidations were published';
      await tx.committed(outer).catch((e: Error) => { published = `publishing its invalidations failed too (${e.message})`; });
      throw new TransactionOutcomeUnknownError(
        `the connection failed after COMMIT was sent: the transaction may have committed; ${published} (${(err as Error).message})`,
        { cause: err },
      );
    }
    if (commit.command === 'ROLLBACK') {
      // COMMIT of a transaction in which a statement failed (and was caught) rolls back.
      tx.discarded();
      throw new TransactionRolledBackError('COMMIT rolled back: a statement in the transaction failed earlier; nothing was published');
    }
    await options.afterCommit?.();
    // Published here: the relay need not publish these rows again (if it does, it is harmless).
    // Not published (joined an outer batch, or publishing failed: thrown): the relay will.
    if (await tx.committed(outer) && outbox !== undefined) {
      await forgetOutboxRows(client, outbox, outboxIds).catch((e: Error) => { broken = e; });
    }
    return result;
  } finally {
    broken ??= lost();
    if (out !== undefined) out.release(broken);
    else client.removeListener('error', onError);
  }
}
