import { performance } from 'node:perf_hooks';
import { Cluster } from 'ioredis';
import { slotOwner, slotOwnerIdentity } from './cluster.js';
import { backoff, parseInfo, type RedisClient } from './connection.js';
import { BadEntryError, type BadEntryReason } from './errors.js';
import { compareStreamIds, ZERO_ID } from './stream-id.js';
import { streamInfoScript } from './lua-stream-info.js';
import { decode, type DecodedEntry } from './wire.js';

/** Why the reader could not prove it saw every entry since its cursor. */
export type GapCause = 'trimmed' | 'missing' | 'reset' | 'restart';
export type ReaderStatus = 'connecting' | 'ready' | 'reconnecting' | 'closed';

export interface ReaderHandlers {
  /** A decoded entry from another origin. Must not throw; exceptions are reported as errors. */
  onEntry(entry: DecodedEntry): void;
  /** Called (synchronously, before any later entry is handed over) when a gap is detected. */
  onGap(cause: GapCause, detail: string): void;
  onBadEntry(reason: BadEntryReason, id: string, message: string): void;
  onStatus(status: ReaderStatus, previous: ReaderStatus): void;
  /** The reader has read everything that was in the stream at `at` (performance.now()). */
  onCaughtUp(at: number): void;
  onError(err: unknown): void;
}

export interface ReaderOptions {
  readonly stream: string;
  readonly origin: string;
  readonly blockMs: number;
  readonly count: number;
  readonly secret?: string | Buffer | undefined;
  readonly maxEntryBytes: number;
}

interface StreamInfo {
  readonly length: number;
  readonly lastId: string;
  readonly maxDeletedId: string;
  readonly entriesAdded: number;
}


/** The `o` field of raw entry fields, without decoding the rest. */
function originOf(fields: unknown): string | undefined {
  if (!Array.isArray(fields)) return undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'o') return fields[i + 1] as string;
  return undefined;
}

/**
 * Reads the invalidation stream with XREAD BLOCK on its own connection, from a cursor, with no
 * consumer group. Gap detection (invariant I2) needs no extra round trip: each XREAD is
 * pipelined behind a small Lua script returning the XINFO STREAM counters, which report the
 * stream as it was just before the read.
 *
 * The reader counts every entry it reads, so it knows how many entries were ever added up to
 * its cursor (`counted`). Then, in the snapshot:
 * - `entries-added - length` (entries deleted so far) > counted: an entry after the cursor
 *   was trimmed or deleted before we read it. (Redis 7.0 updates `max-deleted-entry-id` on
 *   XDEL only, not on trims, so it is checked too but cannot be relied on alone.)
 * - `last-generated-id` == cursor but `entries-added` differs from what we counted, fewer
 *   entries added than counted, or the end behind the cursor: the stream was re-created
 *   (deleted, Redis flushed or restarted with no persistence).
 * - the stream is missing while we had read from it; the server's run_id changed.
 *
 * On a gap the reader calls `onGap` (the cache clears itself there), then resumes from the
 * stream's current end.
 */
export class StreamReader {
  readonly #conn: RedisClient;
  readonly #opts: ReaderOptions;
  readonly #h: ReaderHandlers;
  #cursor = ZERO_ID;
  /** entries-added value that matches #cursor when no entry was missed. */
  #counted = 0;
  #runId: string | undefined;
  /** Cluster: `host:port/run_id` of the master serving the stream when last synced. */
  #owner: string | undefined;
  /** Cluster: the connection to that master ended (it may have been failed over). */
  #ownerLost = false;
  #status: ReaderStatus = 'connecting';
  #closed = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** Rejects the read in flight when the connection closes (ioredis drops it silently). */
  #dropped: ((err: Error) => void) | undefined;

  constructor(conn: RedisClient, opts: ReaderOptions, handlers: ReaderHandlers) {
    this.#conn = conn;
    this.#opts = opts;
    this.#h = handlers;
    conn.on('error', (err: unknown) => {
      if (!this.#closed) this.#h.onError(err);
    });
    if (conn instanceof Cluster) {
      conn.on('-node', (node: { options: { host?: string; port?: number } }) => {
        if (this.#owner?.startsWith(`${node.options.host}:${node.options.port}/`)) this.#ownerLost = true;
      });
    }
    conn.on('close', () => {
      this.#dropped?.(new Error('connection closed'));
      if (!this.#closed && this.#status === 'ready') this.#setStatus('reconnecting');
    });
  }

  get status(): ReaderStatus { return this.#status; }
  get cursor(): string { return this.#cursor; }
  /** Entries ever added to the stream up to the cursor (`entries-added - counted` = entries behind). */
  get counted(): number { return this.#counted; }

  /** Captures the stream's current end (before the cache serves), then starts the read loop. */
  async start(): Promise<void> {
    await this.#sync(true);
    this.#setStatus('ready');
    this.#h.onCaughtUp(performance.now());
    this.#loop = this.#run();
  }

  async close(): Promise<void> {
    if (this.#closed) return this.#loop;
    this.#closed = true;
    this.#wake?.();
    this.#conn.disconnect();
    this.#setStatus('closed');
    await this.#loop;
  }

  #setStatus(next: ReaderStatus): void {
    const prev = this.#status;
    if (prev === next || prev === 'closed') return;
    this.#status = next;
    this.#h.onStatus(next, prev);
  }

  #gap(cause: GapCause, detail: string, info: StreamInfo | undefined): void {
    this.#cursor = info?.lastId ?? ZERO_ID;
    this.#counted = info?.entriesAdded ?? 0;
    this.#h.onGap(cause, detail);
  }

  /** Checks the server identity (restart) and the stream position. `initial` adopts the stream's end. */
  async #sync(initial: boolean): Promise<void> {
    const conn = this.#conn;
    if (conn instanceof Cluster) {
      if (await this.#syncOwner(conn, initial)) return;
    } else {
      const runId = parseInfo(await conn.info('server')).get('run_id');
      if (!initial && this.#runId !== undefined && runId !== this.#runId) {
        this.#runId = runId;
        this.#gap('restart', `Redis run_id changed to ${runId}`, await this.#info());
        return;
      }
      this.#runId = runId;
    }
    const info = await this.#info();
    if (initial) {
      this.#cursor = info?.lastId ?? ZERO_ID;
      this.#counted = info?.entriesAdded ?? 0;
    } else {
      this.#check(info);
    }
  }

  /**
   * Cluster: the failover rule. A promoted replica may lack the newest entries its master
   * acknowledged, and a reader that had not read them yet cannot tell from any count. So when
   * the master serving the stream is another node (or the same address with a new run_id), the
   * reader reports a 'restart' gap, as for a restarted standalone Redis. True when it did.
   */
  async #syncOwner(conn: Cluster, initial: boolean): Promise<boolean> {
    const stream = this.#opts.stream;
    let identity: string | undefined;
    for (let i = 0; identity === undefined; i++) {
      await this.#info(); // routes a keyed command first, so ioredis knows the slot's master
      const before = slotOwner(conn, stream);
      identity = await slotOwnerIdentity(conn, stream);
      if (identity !== undefined && !identity.startsWith(`${before}/`)) identity = undefined; // moved meanwhile
      if (identity === undefined && i >= 2) throw new Error(`no reachable master serves ${stream} yet`);
    }
    const previous = this.#owner;
    this.#owner = identity;
    this.#ownerLost = false;
    if (initial || previous === undefined || previous === identity) return false;
    this.#gap('restart', `the master serving ${stream} changed from ${previous} to ${identity} (failover): entries it had acknowledged may be lost`, await this.#info());
    return true;
  }

  /** Cluster: whether the stream's master may have changed since the last sync. */
  #ownerMoved(): boolean {
    const owner = this.#owner;
    if (owner === undefined) return false;
    return this.#ownerLost || !owner.startsWith(`${slotOwner(this.#conn as Cluster, this.#opts.stream)}/`);
  }

  async #info(): Promise<StreamInfo | undefined> {
    const r = await streamInfoScript.run<[number, string, string, number] | null>(this.#conn, [this.#opts.stream], []);
    if (r === null) return undefined;
    return { length: Number(r[0]), lastId: String(r[1]), maxDeletedId: String(r[2]), entriesAdded: Number(r[3]) };
  }


  /** Compares the stream as it was just before a read with what this reader has counted. */
  #check(info: StreamInfo | undefined): void {
    const cur = this.#cursor;
    if (info === undefined) {
      if (cur !== ZERO_ID || this.#counted !== 0) this.#gap('missing', `stream is gone (cursor ${cur})`, undefined);
      return;
    }
    const deleted = info.entriesAdded - info.length;
    if (info.entriesAdded < this.#counted) {
      this.#gap('reset', `stream reports ${info.entriesAdded} entries added, reader counted ${this.#counted}`, info);
    } else if (deleted > this.#counted || compareStreamIds(info.maxDeletedId, cur) > 0) {
      this.#gap('trimmed', `${deleted - this.#counted} entries after cursor ${cur} were deleted unread`, info);
    } else if (compareStreamIds(info.lastId, cur) < 0) {
      this.#gap('reset', `stream end ${info.lastId} is behind cursor ${cur}`, info);
    } else if (info.lastId === cur && info.entriesAdded !== this.#counted) {
      this.#gap('reset', `stream reports ${info.entriesAdded} entries added, reader counted ${this.#counted}`, info);
    }
  }

  async #run(): Promise<void> {
    const { stream, count, blockMs } = this.#opts;
    let failures = 0;
    let resync = false;
    while (!this.#closed) {
      try {
        if (resync) {
          await this.#sync(false);
          resync = false;
        }
        const dropped = new Promise<never>((_, reject) => { this.#dropped = reject; });
        // Both commands go out in one write; the counters answer at once, XREAD when entries arrive.
        const infoP = this.#info();
        const readP = this.#conn.xread('COUNT', count, 'BLOCK', blockMs, 'STREAMS', stream, this.#cursor);
        for (const p of [dropped, infoP, readP]) p.catch(() => undefined); // each is awaited below
        const info = await Promise.race([infoP, dropped]);
        if (this.#ownerMoved()) {
          // Counts from another master prove nothing: let the read finish, then re-sync (failover rule).
          await Promise.race([readP, dropped]).catch(() => undefined);
          resync = true;
          continue;
        }
        this.#check(info);
        const reply = await Promise.race([readP, dropped]);
        if (this.#ownerMoved()) { resync = true; continue; } // the reply may come from a new master
        this.#dropped = undefined;
        if (this.#closed) break;
        failures = 0;
        this.#setStatus('ready');
        let n = 0;
        if (reply) {
          const entries = (reply as [string, [string, unknown][]][])[0]?.[1] ?? [];
          n = entries.length;
          this.#apply(entries);
        }
        if (n < count) this.#h.onCaughtUp(performance.now());
      } catch (err) {
        if (this.#closed) break;
        this.#h.onError(err);
        this.#setStatus('reconnecting');
        resync = true;
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
          setTimeout(resolve, backoff(failures++)).unref();
        });
        this.#wake = undefined;
      }
    }
  }

  #apply(entries: [string, unknown][]): void {
    const { origin, secret, maxEntryBytes } = this.#opts;
    for (const [id, fields] of entries) {
      if (compareStreamIds(id, this.#cursor) <= 0) continue; // already covered by a gap reset
      this.#cursor = id;
      this.#counted++;
      // Our own echo was applied locally when published: skip it before decoding (a publisher
      // would otherwise re-parse every key it sends). With signing on, decode first, so that a
      // forged origin cannot suppress invalidations.
      if (secret === undefined && originOf(fields) === origin) continue;
      let entry: DecodedEntry;
      try {
        entry = decode(id, fields, { secret, maxEntryBytes });
      } catch (err) {
        if (err instanceof BadEntryError) this.#h.onBadEntry(err.reason, id, err.message);
        else this.#h.onBadEntry('malformed', id, String(err));
        continue;
      }
      if (entry.origin === origin) continue; // our own echo: already applied locally
      try {
        this.#h.onEntry(entry);
      } catch (err) {
        this.#h.onError(err);
      }
    }
  }
}
