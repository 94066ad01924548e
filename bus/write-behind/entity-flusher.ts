import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { backoff, type RedisClient } from '../connection.js';
import type { Entity } from '../entities.js';
import type { WriteBehindKeys } from '../keys.js';
import { encodeDeadLetter, parsePending, type PendingRow } from './codec.js';
import { ackScript } from './lua-ack.js';
import { claimScript } from './lua-claim.js';
import { releaseScript } from './lua-release.js';
import { classifyPgError, errorMessage, sqlState } from './pg-errors.js';
import { makeUpsert, type Upsert, type UpsertMethod } from './upsert.js';

/** What one flush of a claimed batch did. */
export interface FlushInfo {
  readonly entity: string;
  /** Rows claimed. */
  readonly rows: number;
  /** Rows Postgres inserted or updated (the rest carried a version not newer than the stored one). */
  readonly applied: number;
  /** Rows sent to the dead-letter list. */
  readonly dead: number;
  /** Rows removed from the overlay (the others were rewritten during the flush and stay pending). */
  readonly removed: number;
  readonly durationMs: number;
}

export interface DeadInfo { readonly entity: string; readonly id: string; readonly version: string; readonly code: string; readonly reason: string }
export interface RetryInfo { readonly entity: string; readonly attempt: number; readonly delayMs: number; readonly code: string; readonly message: string }

export interface EntityFlusherDeps {
  readonly client: RedisClient;
  readonly pool: pg.Pool;
  readonly keys: WriteBehindKeys;
  readonly deadKey: string;
  readonly batchSize: number;
  readonly concurrency: number;
  readonly leaseMs: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly method: UpsertMethod;
  readonly closed: () => boolean;
  readonly onFlushed: (info: FlushInfo) => void;
  readonly onDead: (info: DeadInfo) => void;
  readonly onRetry: (info: RetryInfo) => void;
  /** Redis failed (claim/ack): reported; the sweep tries again later. */
  readonly onRedisError: (err: unknown) => void;
  /** Called when a backoff ends, to drain again. */
  readonly wake: () => void;
}

interface Claim { readonly id: string; readonly rows: PendingRow[] }
interface Written { readonly applied: number; readonly dead: { row: PendingRow; err: unknown }[] }

/**
 * Drains one entity: claim due rows (lease) → upsert with the version guard → ack
 * (compare-and-delete), in `concurrency` loops. A batch Postgres refuses is bisected down to the
 * rows at fault, which go to the dead-letter list; any other failure gives the claimed rows back
 * and blocks the entity for a backoff (exponential, jittered), so nothing is ever dropped.
 */
export class EntityFlusher {
  readonly entity: Entity;
  readonly #d: EntityFlusherDeps;
  readonly #upsert: Upsert;
  #draining: Promise<void> | undefined;
  #again = false;
  #attempt = 0;
  #blockedUntil = 0;
  #timer: NodeJS.Timeout | undefined;
  lastError: string | undefined;

  constructor(entity: Entity, deps: EntityFlusherDeps) {
    this.entity = entity;
    this.#d = deps;
    this.#upsert = makeUpsert(entity, deps.method);
  }

  /** true while Postgres failures keep the entity in backoff. */
  get blocked(): boolean { return this.#attempt > 0; }
  get attempt(): number { return this.#attempt; }

  /** Flushes every due row; joins the drain in progress if any (and makes it look again). */
  drain(): Promise<void> {
    if (this.#draining !== undefined) {
      this.#again = true;
      return this.#draining;
    }
    this.#draining = (async () => {
      do {
        this.#again = false;
        await Promise.all(Array.from({ length: this.#d.concurrency }, () => this.#loop()));
      } while (this.#again && this.#open());
    })().finally(() => { this.#draining = undefined; });
    return this.#draining;
  }

  /** Waits for the drain in progress and cancels a pending retry. */
  async stop(): Promise<void> {
    clearTimeout(this.#timer);
    await this.#draining;
  }

  #open(): boolean {
    return !this.#d.closed() && performance.now() >= this.#blockedUntil;
  }

  /**
   * claim → upsert → ack, pipelined: the next batch is claimed while this one is upserted, and
   * its ack runs while the next one is upserted (one ack in flight per loop), so the Postgres
   * connection is rarely idle waiting for Redis.
   */
  async #loop(): Promise<void> {
    let acking: Promise<void> = Promise.resolve();
    let next = this.#tryClaim();
    try {
      for (;;) {
        const claim = await next;
        if (claim === undefined || claim.rows.length === 0) return;
        next = this.#open() ? this.#tryClaim() : Promise.resolve(undefined);
        const started = performance.now();
        const written = await this.#write(claim);
        if (written === undefined) {
          const prefetched = await next;
          if (prefetched !== undefined) await this.#release(prefetched);
          return;
        }
        await acking;
        acking = this.#ack(claim, written, started);
      }
    } finally {
      await acking;
    }
  }

  async #tryClaim(): Promise<Claim | undefined> {
    try {
      return await this.#claim();
    } catch (err) {
      this.#d.onRedisError(err);
      return undefined;
    }
  }

  async #claim(): Promise<Claim> {
    const d = this.#d;
    const k = d.keys;
    const out = await claimScript.run<(string | number)[]>(d.client, [k.dirty, k.overlay, k.claims, k.claimIds], [d.batchSize, d.leaseMs]);
    const rows: PendingRow[] = [];
    for (let i = 1; i + 1 < out.length; i += 2) {
      try {
        rows.push(parsePending(String(out[i]), String(out[i + 1])));
      } catch (err) {
        d.onRedisError(err); // malformed overlay entry (not written by cachebus): reported, left in the overlay
      }
    }
    return { id: String(out[0]), rows };
  }

  async #release(claim: Claim): Promise<void> {
    if (claim.rows.length === 0) return;
    const d = this.#d;
    const k = d.keys;
    await releaseScript.run(d.client, [k.dirty, k.overlay, k.claims, k.claimIds], [claim.id]).catch(d.onRedisError);
  }

  /** Upserts a claimed batch; on failure gives it back, starts a backoff and returns undefined. */
  async #write(claim: Claim): Promise<Written | undefined> {
    try {
      const result = await this.#upsertBisect(claim.rows);
      this.#attempt = 0;
      this.lastError = undefined;
      return result;
    } catch (err) {
      await this.#release(claim);
      this.#backoff(err);
      return undefined;
    }
  }

  /** Compare-and-delete of the written rows, dead letters recorded in the same script. */
  async #ack(claim: Claim, result: Written, started: number): Promise<void> {
    const d = this.#d;
    const dead = new Map(result.dead.map((x) => [x.row.id, x]));
    const args: string[] = [claim.id];
    const now = Date.now();
    for (const r of claim.rows) {
      const x = dead.get(r.id);
      const record = x === undefined ? '' : encodeDeadLetter({
        entity: this.entity.name, id: r.id, version: r.version, row: r.json,
        code: sqlState(x.err), reason: errorMessage(x.err), at: now,
      });
      args.push(r.id, r.version, record);
    }
    let removed = 0;
    try {
      const k = d.keys;
      [removed] = await ackScript.run<[number, number]>(d.client, [k.overlay, k.claims, k.claimIds, d.deadKey], args);
    } catch (err) {
      // Written but not acknowledged: the claim's lease runs out, its rows become due again, are
      // written again (a no-op under the version guard) and acknowledged then; dead letters too.
      d.onRedisError(err);
      return;
    }
    for (const x of result.dead) {
      d.onDead({ entity: this.entity.name, id: x.row.id, version: x.row.version, code: sqlState(x.err), reason: errorMessage(x.err) });
    }
    d.onFlushed({
      entity: this.entity.name, rows: claim.rows.length, applied: result.applied, dead: result.dead.length,
      removed, durationMs: performance.now() - started,
    });
  }

  /** Upserts the rows; on a row-level error, splits the batch in halves down to the bad rows. */
  async #upsertBisect(rows: readonly PendingRow[]): Promise<Written> {
    try {
      return { applied: await this.#upsert(this.#d.pool, rows), dead: [] };
    } catch (err) {
      if (classifyPgError(err) !== 'row') throw err;
      if (rows.length === 1) return { applied: 0, dead: [{ row: rows[0]!, err }] };
      const mid = rows.length >> 1;
      const a = await this.#upsertBisect(rows.slice(0, mid));
      const b = await this.#upsertBisect(rows.slice(mid));
      return { applied: a.applied + b.applied, dead: [...a.dead, ...b.dead] };
    }
  }

  #backoff(err: unknown): void {
    const delayMs = backoff(this.#attempt, this.#d.retryBaseMs, this.#d.retryMaxMs);
    this.#attempt++;
    this.#blockedUntil = performance.now() + delayMs;
    this.lastError = errorMessage(err);
    this.#d.onRetry({ entity: this.entity.name, attempt: this.#attempt, delayMs, code: sqlState(err), message: this.lastError });
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#d.wake(), delayMs);
    this.#timer.unref();
  }
}
