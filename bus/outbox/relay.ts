import type pg from 'pg';
import { backoff, closeClient, connect, type RedisClient, type RedisInput } from '../connection.js';
import { InvalidOptionError } from '../errors.js';
import { busKeys } from '../keys.js';
import { newOrigin } from '../bus.js';
import { checkout, closePg, openPg, type PgHandle, type PgInput } from '../pg.js';
import { Publisher } from '../publisher.js';
import type { SidecarService } from '../sidecar/sidecar.js';
import { quoteTable } from '../entities.js';
import { DEFAULT_OUTBOX, OUTBOX_CHANNEL } from './rows.js';
import { splitByEncodedSize, type RelayedInvalidation } from './split.js';

export interface OutboxRelayOptions {
  /** Postgres holding the outbox: a `pg.Pool` (not closed by stop) or a connection string. */
  readonly pg: PgInput;
  /** Redis carrying the namespace's invalidation stream. */
  readonly redis: RedisInput;
  readonly namespace: string;
  /** @defaultValue `process.env.CACHEBUS_PREFIX ?? 'cachebus'` */
  readonly prefix?: string | undefined;
  /** HMAC secret of the namespace, when signing is on. */
  readonly secret?: string | Buffer | undefined;
  /** Outbox table, optionally schema-qualified (resolved by the connection's search_path). @defaultValue `'cachebus_outbox'` */
  readonly outbox?: string | undefined;
  /** Most outbox rows taken per batch (one SELECT, one XADD, one DELETE, one COMMIT). @defaultValue `1000` */
  readonly batchSize?: number | undefined;
  /** Poll interval while the outbox is empty, ms; NOTIFY wakes the relay sooner. @defaultValue `250` */
  readonly pollMs?: number | undefined;
  /** LISTEN for the triggers' NOTIFY to wake at once (correctness never depends on it). @defaultValue `true` */
  readonly listen?: boolean | undefined;
  /** @defaultValue `65_536` */
  readonly maxEntryBytes?: number | undefined;
  /** Approximate MAXLEN retention of the stream. @defaultValue `100_000` */
  readonly streamMaxLen?: number | undefined;
  /** @internal test hook: runs after the XADD, before the DELETE and COMMIT. */
  readonly afterPublish?: ((keys: readonly string[]) => Promise<void> | void) | undefined;
}

/** Counters of one relay (plain numbers; the sidecar's metrics read them at scrape time). */
export interface OutboxRelayStats {
  /** Outbox rows published and deleted. */
  rows: number;
  /** Distinct keys published (rows of the same key in one batch are published once). */
  keys: number;
  entries: number;
  batches: number;
  /** Failed drain attempts (Postgres or Redis unavailable, ...); each is retried with backoff. */
  errors: number;
  /** Age of the oldest row of the last batch when it was taken, ms (commit-to-publish lag, roughly). */
  lastBatchMaxAgeMs: number;
  /** NOTIFY wake-ups received. */
  notifications: number;
  /** Keys or tags too large for any entry once encoded: published as a clear of the namespace instead. */
  oversized: number;
}

/**
 * Drains the outbox that the triggers fill and publishes the keys on the invalidation stream:
 * BEGIN; SELECT … FOR UPDATE SKIP LOCKED (one batch); XADD; DELETE; COMMIT. A crash between XADD
 * and COMMIT leaves the rows for the next attempt or another relay (at-least-once: a repeated
 * invalidation is harmless); several relays share the work without taking the same rows.
 * Polls every `pollMs`; NOTIFY only shortens the wait. Postgres or Redis outages are retried
 * with backoff, never thrown.
 */
export class OutboxRelay implements SidecarService {
  readonly name = 'outbox';
  readonly stats: OutboxRelayStats = { rows: 0, keys: 0, entries: 0, batches: 0, errors: 0, lastBatchMaxAgeMs: 0, notifications: 0, oversized: 0 };
  readonly #o: Required<Pick<OutboxRelayOptions, 'batchSize' | 'pollMs' | 'listen'>> & OutboxRelayOptions;
  readonly #select: string;
  readonly #delete: string;
  readonly #origin = newOrigin();
  #pg: PgHandle | undefined;
  #redis: RedisClient | undefined;
  #ownsRedis = false;
  #publisher: Publisher | undefined;
  #listener: pg.PoolClient | undefined;
  #listening: Promise<void> | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;
  #stopped: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** A NOTIFY arrived since the last SELECT began: the next idle returns at once (no lost wake-up). */
  #notified = false;
  #failures = 0;
  #lastError: string | undefined;
  #lastSuccess = 0;
  /**
   * Keyset cursor: while batches come back full, the next SELECT starts after the last id taken,
   * so a long drain does not walk the dead index entries of the rows it already deleted. Reset
   * to 0 whenever a batch is not full (or fails): rows committed late with a lower id, or left
   * by a relay that died, are taken then.
   */
  #cursor = '0';
  /** The last batch started from the cursor: pass again from 0 before idling. */
  #again = false;

  constructor(opts: OutboxRelayOptions) {
    const given = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as OutboxRelayOptions;
    const o = { batchSize: 1000, pollMs: 250, listen: true, ...given };
    for (const n of ['batchSize', 'pollMs'] as const) {
      if (!Number.isInteger(o[n]) || o[n] <= 0) throw new InvalidOptionError(`options.${n} must be a positive integer (got ${String(o[n])})`);
    }
    busKeys(o.prefix ?? process.env.CACHEBUS_PREFIX ?? 'cachebus', o.namespace); // validates namespace and prefix
    this.#o = o;
    const table = quoteTable(o.outbox ?? DEFAULT_OUTBOX);
    // kind through to_jsonb: an outbox created before the column existed reads as all keys.
    this.#select = `SELECT id, key, to_jsonb(o) ->> 'kind' AS kind, (extract(epoch FROM clock_timestamp() - created_at) * 1000)::float8 AS age_ms
      FROM ${table} o WHERE namespace = $1 AND id > $3 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED`;
    this.#delete = `DELETE FROM ${table} WHERE id = ANY($1::bigint[])`;
  }

  /** Opens the connections lazily and starts draining; resolves at once (outages are retried in the background). */
  async start(): Promise<void> {
    if (this.#loop !== undefined) return;
    const o = this.#o;
    this.#pg = openPg(o.pg);
    const conn = connect(o.redis, `cachebus:${o.namespace}:outbox`, { maxRetriesPerRequest: 2 });
    const redis = conn.client;
    this.#redis = redis;
    this.#ownsRedis = conn.owned;
    if (conn.owned) redis.on('error', (err: unknown) => { this.#lastError = `redis: ${(err as Error)?.message ?? err}`; });
    this.#publisher = new Publisher(redis, {
      stream: busKeys(o.prefix ?? process.env.CACHEBUS_PREFIX ?? 'cachebus', o.namespace).stream,
      origin: this.#origin,
      secret: o.secret,
      maxEntryBytes: o.maxEntryBytes ?? 65_536,
      streamMaxLen: o.streamMaxLen ?? 100_000,
    });
    this.#loop = this.#run();
  }

  /** Finishes the batch in flight, then stops and closes what it opened. Idempotent. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      this.#stopping = true;
      this.#wake?.();
      await this.#loop;
      await this.#listening;
      const l = this.#listener;
      this.#listener = undefined;
      if (l !== undefined) {
        await l.query(`UNLISTEN ${OUTBOX_CHANNEL}`).catch(() => undefined);
        l.release();
      }
      if (this.#pg !== undefined) await closePg(this.#pg);
      if (this.#ownsRedis && this.#redis !== undefined) await closeClient(this.#redis);
    })();
    return this.#stopped;
  }

  health(): { ok: boolean; detail?: unknown } {
    return {
      ok: !this.#stopping && this.#failures === 0,
      detail: { ...this.stats, failures: this.#failures, lastError: this.#lastError, lastSuccessAgoMs: this.#lastSuccess ? Date.now() - this.#lastSuccess : null },
    };
  }

  /** Publishes one batch; resolves with the number of outbox rows it took (0 when empty). */
  async drainOnce(): Promise<number> {
    const pool = this.#pg?.pool;
    const publisher = this.#publisher;
    if (pool === undefined || publisher === undefined) throw new InvalidOptionError('the relay is not started');
    // With an 'error' listener while checked out: a terminated backend must not kill the sidecar.
    const out = await checkout(pool);
    const client = out.client;
    let broken: Error | undefined;
    try {
      // An ordered index scan that stops at LIMIT, whatever the (often stale) statistics of a
      // queue table suggest: a bitmap scan + sort would read the whole outbox every batch.
      await client.query('BEGIN; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off');
      const cursor = this.#cursor;
      this.#cursor = '0';
      this.#again = cursor !== '0';
      const { rows } = await client.query<{ id: string; key: string; kind: string | null; age_ms: number }>(this.#select, [this.#o.namespace, this.#o.batchSize, cursor]);
      if (rows.length === 0) {
        await client.query('COMMIT');
        return 0;
      }
      const inv = toInvalidation(rows);
      const keys = inv.keys;
      // Split by the size the entry will have once encoded: a reader never gets one it refuses.
      const budget = (this.#o.maxEntryBytes ?? 65_536) - 256 - this.#origin.length;
      const { parts, oversized } = splitByEncodedSize(inv, budget);
      const ids: string[] = [];
      for (const part of parts) ids.push(...await publisher.publish(part)); // one tick each: not merged again
      this.stats.oversized += oversized;
      await this.#o.afterPublish?.(keys);
      await client.query(this.#delete, [rows.map((r) => r.id)]);
      await client.query('COMMIT');
      if (rows.length >= this.#o.batchSize) this.#cursor = rows[rows.length - 1]!.id;
      const s = this.stats;
      s.rows += rows.length;
      s.keys += keys.length;
      s.entries += ids.length;
      s.batches++;
      s.lastBatchMaxAgeMs = Math.max(...rows.map((r) => r.age_ms));
      return rows.length;
    } catch (err) {
      broken = err as Error;
      if (out.error === undefined) await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      out.release(broken);
    }
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      try {
        if (this.#o.listen) this.#listen();
        this.#notified = false; // cleared before the SELECT: a later commit sets it again
        const n = await this.drainOnce();
        this.#failures = 0;
        this.#lastSuccess = Date.now();
        if (n >= this.#o.batchSize || this.#again) continue; // more is waiting
        await this.#idle(this.#o.pollMs);
      } catch (err) {
        this.stats.errors++;
        this.#lastError = String((err as Error)?.message ?? err);
        await this.#idle(backoff(this.#failures++, 100, 5_000), true);
      }
    }
  }

  /** Waits `ms`, or less when woken (stop; NOTIFY unless backing off after an error). */
  #idle(ms: number, backingOff = false): Promise<void> {
    if (this.#stopping || (this.#notified && !backingOff)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void { clearTimeout(timer); resolve(); }
      this.#wake = () => {
        if (backingOff && !this.#stopping) return;
        this.#wake = undefined;
        done();
      };
    });
  }

  /** Best effort: a dedicated connection LISTENing for the triggers' NOTIFY. Re-opened after errors. */
  #listen(): void {
    if (this.#listener !== undefined || this.#listening !== undefined || this.#pg === undefined) return;
    const pool = this.#pg.pool;
    this.#listening = (async () => {
      const c = await pool.connect();
      c.on('notification', (m) => {
        if (m.channel === OUTBOX_CHANNEL && m.payload === this.#o.namespace) {
          this.stats.notifications++;
          this.#notified = true;
          this.#wake?.();
        }
      });
      let released = false;
      c.on('error', () => {
        if (this.#listener === c) this.#listener = undefined;
        if (!released) c.release(true);
        released = true;
      });
      try {
        await c.query(`LISTEN ${OUTBOX_CHANNEL}`);
      } catch (err) {
        if (!released) c.release(true); // never leak the connection; retried on the next round
        released = true;
        throw err;
      }
      if (this.#stopping) c.release();
      else this.#listener = c;
    })().catch(() => undefined).finally(() => { this.#listening = undefined; });
  }
}

/** The rows of one batch as one invalidation (a key repeated in the batch is published once). */
function toInvalidation(rows: readonly { key: string; kind: string | null }[]): RelayedInvalidation {
  const keys = new Set<string>();
  const tags = new Set<string>();
  let clear = false;
  for (const r of rows) {
    if (r.kind === 'g') tags.add(r.key);
    else if (r.kind === 'c') clear = true;
    else keys.add(r.key);
  }
  return { keys: [...keys], tags: [...tags], clear };
}
