import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { backoff, type RedisClient } from '../connection.js';
import type { Entity } from '../entities.js';
import type { WriteBehindKeys } from '../keys.js';
import { encodeDeadLetter, parsePending, type PendingRow } from './codec.js';
import { ackScript } from './lua-ack.js';
import { claimScript } from './lua-claim.js';
import { releaseScript } from './lua-release.js';
import { classifyPgError, errorMessage, missingParent, sqlState, type MissingParent } from './pg-errors.js';
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
  /** Rows kept pending because the row they reference (foreign key) is itself still pending. */
  readonly deferred: number;
  /** Rows removed from the overlay (the others were rewritten during the flush and stay pending). */
  readonly removed: number;
  /** Dead letters dropped from the list by its bound (`maxDeadLetters`), oldest first. */
  readonly deadDropped: number;
  /** Ids of the rows written (to invalidate every cache's copy). */
  readonly ids: readonly string[];
  readonly durationMs: number;
}

export interface DeadInfo { readonly entity: string; readonly id: string; readonly version: string; readonly code: string; readonly reason: string }
export interface RetryInfo { readonly entity: string; readonly attempt: number; readonly delayMs: number; readonly code: string; readonly message: string }

export interface EntityFlusherDeps {
  readonly client: RedisClient;
  readonly pool: pg.Pool;
  readonly keys: WriteBehindKeys;
  readonly deadKey: string;
  readonly deadDroppedKey: string;
  readonly maxDeadLetters: number;
  readonly batchSize: number;
  readonly concurrency: number;
  readonly leaseMs: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly method: UpsertMethod;
  readonly closed: () => boolean;
  /** The definition a row was written with (by hash); undefined when Redis does not know it. */
  readonly definition: (hash: string) => Promise<Entity | undefined>;
  /** true when the row a foreign key points to is itself pending (then the child waits). */
  readonly parentPending: (parent: MissingParent) => Promise<boolean>;
  readonly onFlushed: (info: FlushInfo) => void;
  readonly onDead: (info: DeadInfo) => void;
  readonly onRetry: (info: RetryInfo) => void;
  /** Rows deferred behind a pending parent (the parent's entity should drain first). */
  readonly onDeferred: (parentTable: string) => void;
  /** Redis failed (claim/ack): reported; the sweep tries again later. */
  readonly onRedisError: (err: unknown) => void;
  /** Called when a backoff ends, to drain again. */
  readonly wake: () => void;
}

interface Claim { readonly id: string; readonly rows: PendingRow[] }
interface Written {
  readonly applied: number;
  readonly dead: { row: PendingRow; err: unknown }[];
  readonly deferred: PendingRow[];
}

/** A definition that is not in Redis (never retried as a row error: the rows stay pending). */
class UnknownDefinitionError extends Error {}

/**
 * Drains one entity: claim due rows (lease) → upsert with the version guard, each row with the
 * definition it was written with → ack (compare-and-delete), in `concurrency` loops. A batch
 * Postgres refuses is bisected down to the rows at fault, which go to the dead-letter list (or
 * wait, when the row a foreign key needs is itself pending); any other failure gives the
 * claimed rows back and blocks the entity for a backoff (exponential, jittered) during which no
 * drain claims anything, so nothing is ever dropped and an outage costs no retry storm.
 */
export class EntityFlusher {
  readonly entity: Entity;
  readonly #d: EntityFlusherDeps;
  readonly #upserts = new Map<string, Upsert>();
  #draining: Promise<void> | undefined;
  #again = false;
  #attempt = 0;
  #blockedUntil = 0;
  #timer: NodeJS.Timeout | undefined;
  lastError: string | undefined;

  constructor(entity: Entity, deps: EntityFlusherDeps) {
    this.entity = entity;
    this.#d = deps;
    this.#upserts.set(entity.hash, makeUpsert(entity, deps.method));
  }

  /** true while Postgres failures keep the entity in backoff. */
  get blocked(): boolean { return this.#attempt > 0; }
  get attempt(): number { return this.#attempt; }

  /** Flushes every due row; joins the drain in progress if any (and makes it look again). No-op during a backoff. */
  drain(): Promise<void> {
    if (!this.#open()) return this.#draining ?? Promise.resolve();
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
    if (!this.#open()) return; // in backoff: the timer drains again when it ends
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

  /** The upsert for rows written with definition `hash` ('' = rows older than versioned definitions). */
  async #upsertFor(hash: string): Promise<Upsert> {
    const key = hash === '' ? this.entity.hash : hash;
    let up = this.#upserts.get(key);
    if (up === undefined) {
      const e = await this.#d.definition(key);
      if (e === undefined) throw new UnknownDefinitionError(`write-behind ${this.entity.name}: definition ${key} is not in Redis; its rows stay pending`);
      up = makeUpsert(e, this.#d.method);
      this.#upserts.set(key, up);
    }
    return up;
  }

  /** Upserts a claimed batch; on failure gives it back, starts a backoff and returns undefined. */
  async #write(claim: Claim): Promise<Written | undefined> {
    try {
      // Rows written by different app versions: each group with its own definition.
      const groups = new Map<string, PendingRow[]>();
      for (const r of claim.rows) {
        const g = groups.get(r.def ?? '');
        if (g === undefined) groups.set(r.def ?? '', [r]);
        else g.push(r);
      }
      const out: Written = { applied: 0, dead: [], deferred: [] };
      let applied = 0;
      for (const [hash, rows] of groups) {
        const w = await this.#upsertBisect(await this.#upsertFor(hash), rows);
        applied += w.applied;
        out.dead.push(...w.dead);
        out.deferred.push(...w.deferred);
      }
      this.#attempt = 0;
      this.lastError = undefined;
      return { ...out, applied };
    } catch (err) {
      await this.#release(claim);
      this.#backoff(err);
      return undefined;
    }
  }

  /** Compare-and-delete of the written rows, dead letters and deferred rows recorded in the same script. */
  async #ack(claim: Claim, result: Written, started: number): Promise<void> {
    const d = this.#d;
    const dead = new Map(result.dead.map((x) => [x.row.id, x]));
    const deferred = new Set(result.deferred.map((r) => r.id));
    const args: string[] = [claim.id, String(d.retryBaseMs), String(d.maxDeadLetters)];
    const now = Date.now();
    const ids: string[] = [];
    for (const r of claim.rows) {
      const x = dead.get(r.id);
      if (deferred.has(r.id)) {
        args.push(r.id, r.version, '!');
        continue;
      }
      if (x === undefined) ids.push(r.id);
      const record = x === undefined ? '' : encodeDeadLetter({
        entity: this.entity.name, id: r.id, version: r.version, def: r.def, row: r.json,
        code: sqlState(x.err), reason: errorMessage(x.err), at: now,
      });
      args.push(r.id, r.version, record);
    }
    let removed = 0;
    let deadDropped = 0;
    try {
      const k = d.keys;
      [removed, , deadDropped] = await ackScript.run<[number, number, number]>(
        d.client, [k.overlay, k.claims, k.claimIds, d.deadKey, k.dirty, d.deadDroppedKey], args);
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
      deferred: result.deferred.length, removed, deadDropped, ids, durationMs: performance.now() - started,
    });
  }

  /** Upserts the rows; on a row-level error, splits the batch in halves down to the bad rows. */
  async #upsertBisect(upsert: Upsert, rows: readonly PendingRow[]): Promise<Written> {
    try {
      return { applied: await upsert(this.#d.pool, rows), dead: [], deferred: [] };
    } catch (err) {
      if (classifyPgError(err) !== 'row') throw err;
      if (rows.length === 1) {
        const parent = missingParent(err);
        if (parent !== undefined && await this.#d.parentPending(parent)) {
          this.#d.onDeferred(parent.table);
          return { applied: 0, dead: [], deferred: [rows[0]!] };
        }
        return { applied: 0, dead: [{ row: rows[0]!, err }], deferred: [] };
      }
      const mid = rows.length >> 1;
      const a = await this.#upsertBisect(upsert, rows.slice(0, mid));
      const b = await this.#upsertBisect(upsert, rows.slice(mid));
      return { applied: a.applied + b.applied, dead: [...a.dead, ...b.dead], deferred: [...a.deferred, ...b.deferred] };
    }
  }

  #backoff(err: unknown): void {
    if (performance.now() < this.#blockedUntil) return; // another loop of this drain already backs off
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
