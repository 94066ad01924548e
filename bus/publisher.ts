import { performance } from 'node:perf_hooks';
import type { RedisClient } from './connection.js';
import { backoff } from './connection.js';
import { PublishError } from './errors.js';
import { appendArgs, publishScript, type Trim } from './lua-append.js';
import { publishWakeScript } from './lua-publish-wake.js';
import { completeInvalidation, encode, type Invalidation } from './wire.js';

export interface PublisherOptions {
  readonly stream: string;
  readonly origin: string;
  readonly secret?: string | Buffer | undefined;
  readonly maxEntryBytes: number;
  /** Approximate MAXLEN retention; 0 disables it. */
  readonly streamMaxLen: number;
  /** When set, approximate MINID retention of entries younger than this many ms (instead of MAXLEN). */
  readonly streamMaxAgeMs?: number | undefined;
  /**
   * Most keys and tags kept for re-publishing after failed publishes; past it, the backlog
   * becomes one namespace clear. @defaultValue 10_000
   */
  readonly maxBacklog?: number | undefined;
  /** Called when the backlog of unpublished invalidations becomes non-empty (true) or empty (false). */
  readonly onBacklog?: ((pending: boolean) => void) | undefined;
  /** When set, each entry is also PUBLISHed on this channel as a wake-up hint (bus/lua-publish-wake.ts). */
  readonly wakeChannel?: string | undefined;
  /**
   * Option `wake: 'host'` (the datagrams to same-host peers, bus/host-wake.ts): called with each
   * batch (the invalidations of one tick) first thing as it is sent, before it is encoded; after
   * a quiet spell (`kHintQuietMs`), with the tick's first invalidation at once, within
   * `publish()`, and then with the batch only if more joined it. Must not throw.
   */
  readonly hint?: ((inv: Invalidation) => void) | undefined;
}

interface Batch {
  keys: Set<string>;
  tags: Set<string>;
  clear: boolean;
}

interface Pending extends Batch {
  /** Its first invalidation was hinted at once, and none joined it since. */
  hinted: boolean;
  promise: Promise<string[]>;
  resolve: (ids: string[]) => void;
  reject: (err: unknown) => void;
}

const kMaxBacklog = 10_000;

/**
 * After this long (ms) without a hint, the next invalidation is hinted at once rather than with
 * its tick's batch: a datagram leaves tens of µs sooner in a process that was idle (each step
 * before the `sendmsg` costs several times more there, issue 15). Under traffic, batches are
 * hinted whole, one datagram per tick, not two.
 */
export const kHintQuietMs = 5;

/**
 * Collects the invalidations made in one tick and appends them, chained (bus/lua-append.ts),
 * in one script call: one entry, or a few when the batch is larger than maxEntryBytes.
 *
 * A publish that fails (Redis unreachable) is not forgotten: its keys and tags go to a bounded
 * backlog that is re-published with backoff, and with every later publish, until Redis takes
 * it. Past `maxBacklog` the backlog becomes one namespace clear (over-invalidating is safe).
 * `onBacklog` tells the cache, which does not serve local entries while a backlog is pending.
 */
export class Publisher {
  readonly #client: RedisClient;
  readonly #opts: PublisherOptions;
  #pending: Pending | undefined;
  #inFlight = new Set<Promise<unknown>>();
  #backlog: Batch | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #failures = 0;
  #closed = false;
  /** Keys and tags of the backlog in a publish still in flight (still owed until it succeeds). */
  #owed = 0;
  /** When hints (option `hint`) last went out (performance.now()). */
  #hintedAt = Number.NEGATIVE_INFINITY;

  constructor(client: RedisClient, opts: PublisherOptions) {
    this.#client = client;
    this.#opts = opts;
  }

  /** Keys and tags (a clear counts as one) waiting to be re-published. */
  get backlog(): number {
    return this.#owed + sizeOf(this.#backlog);
  }

  /** Queues an invalidation; resolves with the stream IDs once the batch is in the stream. */
  publish(inv: Partial<Invalidation>): Promise<string[]> {
    // Nothing to publish: an entry without keys, tags or clear is one every reader refuses (I7).
    if (!inv.clear && !inv.keys?.length && !inv.tags?.length) return this.#pending?.promise ?? Promise.resolve([]);
    let p = this.#pending;
    if (p === undefined) {
      // After a quiet spell, the hint first: before anything else is done for the publish.
      const hint = this.#opts.hint;
      const now = hint === undefined ? 0 : performance.now();
      const hinted = hint !== undefined && now - this.#hintedAt >= kHintQuietMs;
      if (hinted) {
        this.#hintedAt = now;
        hint(completeInvalidation(inv));
      }
      let resolve!: (ids: string[]) => void, reject!: (err: unknown) => void;
      const promise = new Promise<string[]>((res, rej) => { resolve = res; reject = rej; });
      p = { keys: new Set(), tags: new Set(), clear: false, hinted, promise, resolve, reject };
      this.#pending = p;
      queueMicrotask(() => this.#flush());
    } else {
      p.hinted = false; // more joined: the batch is hinted as it is sent
    }
    if (inv.keys) for (const k of inv.keys) p.keys.add(k);
    if (inv.tags) for (const t of inv.tags) p.tags.add(t);
    if (inv.clear) p.clear = true;
    return p.promise;
  }

  /** Resolves once every publish issued so far has settled (the backlog is not waited for). */
  async flushed(): Promise<void> {
    while (this.#pending !== undefined || this.#inFlight.size > 0) {
      await Promise.allSettled([...this.#inFlight, ...(this.#pending ? [this.#pending.promise] : [])]);
    }
  }

  /** Stops re-publishing the backlog. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
  }

  /**
   * The ARGV tail (`appendArgs`) of a script that appends this invalidation itself, atomically
   * with its own effect (write-behind's write script): encoded, signed and trimmed exactly as
   * `publish` would, and the entries' fields (for hints). Throws as `encode` does (a key too
   * large for an entry).
   */
  appendArgsFor(inv: Partial<Invalidation>): { args: string[]; entries: string[][] } {
    const o = this.#opts;
    const entries = encode(
      completeInvalidation(inv),
      { origin: o.origin, time: Date.now(), secret: o.secret, maxEntryBytes: o.maxEntryBytes },
    );
    const trim: Trim =
      o.streamMaxAgeMs !== undefined
        ? { kind: 'MINID', arg: `${Date.now() - o.streamMaxAgeMs}-0` }
        : o.streamMaxLen > 0 ? { kind: 'MAXLEN', arg: o.streamMaxLen } : { kind: '' };
    return { args: appendArgs(entries, trim), entries };
  }

  /**
   * Appends a batch (plus the whole backlog) to the stream; on failure the batch joins the
   * backlog. `hint`: the batch is hinted first (the backlog was hinted when first published).
   */
  #send(batch: Batch, hint = false): Promise<string[]> {
    const o = this.#opts;
    // Before anything else: each step before the first sendmsg costs several times more in a
    // process that was idle (issue 15).
    if (hint && o.hint !== undefined) {
      this.#hintedAt = performance.now();
      o.hint({ keys: [...batch.keys], tags: [...batch.tags], clear: batch.clear });
    }
    const backlog = this.#backlog;
    this.#backlog = undefined;
    const merged: Batch = backlog === undefined ? batch : mergeInto(mergeInto({ keys: new Set(), tags: new Set(), clear: false }, backlog), batch);
    let entries: string[][];
    try {
      entries = encode(
        { keys: [...merged.keys], tags: [...merged.tags], clear: merged.clear },
        { origin: o.origin, time: Date.now(), secret: o.secret, maxEntryBytes: o.maxEntryBytes },
      );
    } catch (err) {
      // Not publishable as given (a key too large for an entry): refused, never retried.
      this.#backlog = backlog;
      return Promise.reject(err);
    }
    const trim: Trim =
      o.streamMaxAgeMs !== undefined
        ? { kind: 'MINID', arg: `${Date.now() - o.streamMaxAgeMs}-0` }
        : o.streamMaxLen > 0 ? { kind: 'MAXLEN', arg: o.streamMaxLen } : { kind: '' };
    const owed = sizeOf(backlog);
    this.#owed += owed;
    const args = appendArgs(entries, trim);
    const sent = o.wakeChannel === undefined
      ? publishScript.run<string[]>(this.#client, [o.stream], args)
      : publishWakeScript.run<string[]>(this.#client, [o.stream], [o.wakeChannel, ...args]);
    return sent.then(
      (ids) => {
        this.#owed -= owed;
        this.#failures = 0;
        if (backlog !== undefined && this.#backlog === undefined) o.onBacklog?.(false);
        return ids;
      },
      (err: unknown) => {
        this.#owed -= owed;
        const had = this.#backlog !== undefined || backlog !== undefined;
        this.#backlog = this.#backlog === undefined ? merged : mergeInto(merged, this.#backlog);
        this.#bound();
        if (!had) o.onBacklog?.(true);
        this.#scheduleRetry();
        throw new PublishError(
          `XADD to ${o.stream} failed: ${(err as Error)?.message ?? err} (kept; it is published once Redis answers)`,
          { cause: err },
        );
      },
    );
  }

  /** Past maxBacklog, the backlog becomes a namespace clear. */
  #bound(): void {
    const b = this.#backlog;
    if (b !== undefined && !b.clear && b.keys.size + b.tags.size > (this.#opts.maxBacklog ?? kMaxBacklog)) {
      this.#backlog = { keys: new Set(), tags: new Set(), clear: true };
    }
  }

  #scheduleRetry(): void {
    if (this.#closed || this.#retryTimer !== undefined) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      const b = this.#backlog;
      if (b === undefined || this.#closed) return;
      this.#failures++;
      this.#track(this.#send({ keys: new Set(), tags: new Set(), clear: false }).catch(() => undefined));
    }, backoff(this.#failures, 50, 2_000));
    this.#retryTimer.unref();
  }

  #track(p: Promise<unknown>): void {
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  }

  #flush(): void {
    const p = this.#pending;
    if (p === undefined) return;
    this.#pending = undefined;
    const done = this.#send(p, !p.hinted).then(p.resolve, p.reject);
    this.#track(done);
  }
}

function sizeOf(b: Batch | undefined): number {
  return b === undefined ? 0 : b.keys.size + b.tags.size + (b.clear ? 1 : 0);
}

function mergeInto(into: Batch, from: Batch): Batch {
  for (const k of from.keys) into.keys.add(k);
  for (const t of from.tags) into.tags.add(t);
  if (from.clear) into.clear = true;
  return into;
}
