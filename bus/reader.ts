import { performance } from 'node:perf_hooks';
import type { Cluster } from 'ioredis';
import { slotOwner, slotOwnerIdentity } from './cluster.js';
import { backoff, parseInfo, type RedisClient } from './connection.js';
import { CommandGuard, StalledError } from './command-guard.js';
import { BadEntryError } from './errors.js';
import { compareStreamIds, ZERO_ID } from './stream-id.js';
import { checkPosition, peekFields, readStreamInfo, type GapCause, type StreamInfo } from './stream-position.js';
import { decode, type DecodedEntry } from './wire.js';
import { isClusterClient } from './redis-like.js';
import { kAnnouncedReadAt, kApplySliceMs, type ReaderHandlers, type ReaderOptions, type ReaderStatus } from './reader-options.js';

export type { GapCause } from './stream-position.js';
export { defaultProofEveryMs, kAnnouncedReadAt, kApplySliceMs, type ReaderHandlers, type ReaderOptions, type ReaderStatus } from './reader-options.js';

/**
 * Reads the invalidation stream with XREAD BLOCK on its own connection, from a cursor, with no
 * consumer group (docs/guarantees.md, I2 and I3).
 *
 * **Per-entry continuity.** Entries published through the chain script (bus/lua-append.ts)
 * name their predecessor (`p`) and the stream's epoch (`e`). Before an entry is applied, the
 * reader checks that `p` is the last chained entry it applied and `e` the epoch it knows;
 * otherwise it reports a gap (the cache clears) first. A trim or XDEL of an unread entry, a
 * re-created stream, or a failover that lost entries is thus caught before anything after
 * the hole is applied, whenever it happened.
 *
 * **Proving reads.** A read that is to prove the reader caught up (I3) carries, pipelined in
 * the same write (no extra round trip), a Lua script that reports the stream's counters, epoch
 * and chain head. They catch what has no later chained entry to show it: the stream gone or
 * re-created, a deleted chained entry the cursor already passed, and (for entries of foreign
 * publishers, which carry no chain fields) the count of entries deleted: `entries-added -
 * length` greater than the entries up to the cursor means one was deleted unread. After a
 * proving read that returned everything, the cursor must have reached the stream end the
 * script saw; if not, an entry was deleted unread.
 *
 * **Plain reads.** While the last proof is younger than `proofEveryMs`, a read is a bare
 * `XREAD` (what a hand-written stream reader sends): its entries are applied with the
 * per-entry checks above, but it proves nothing, so the serving deadline does not move; its
 * `BLOCK` ends when the next proof is due. Under traffic a reader thus runs the script a few
 * times a second instead of once per entry; the counting checks, which have no per-entry
 * form, run with every proof, so what they catch is caught before the next proof is claimed.
 *
 * **Proofs are as old as their read.** `onCaughtUp(at)` passes the time the read was *sent*:
 * a reply that sat in a socket while the process was frozen proves nothing newer.
 *
 * **Every command is guarded**: when the connection closes or a reply does not come in time
 * (a silent partition), the command fails, the connection is re-made, and the reader
 * re-syncs; nothing waits forever.
 */
export class StreamReader {
  /** @internal Benchmarks only: every read a proving read, as before issue 15's second pass. */
  static proveEveryRead = false;
  readonly #conn: RedisClient;
  readonly #opts: ReaderOptions;
  readonly #h: ReaderHandlers;
  #cursor = ZERO_ID;
  /** entries-added value that matches #cursor when no entry was missed; undefined after a per-entry gap, until re-synced. */
  #counted: number | undefined = 0;
  /** The epoch of the chained entries this reader follows (undefined: none seen yet). */
  #epoch: string | undefined;
  /** The last chained entry this reader applied (or knew of when it synced). */
  #head = ZERO_ID;
  #runId: string | undefined;
  /** Cluster: `host:port/run_id` of the master serving the stream when last synced. */
  #owner: string | undefined;
  /** Cluster: the connection to that master ended (it may have been failed over). */
  #ownerLost = false;
  #status: ReaderStatus = 'connecting';
  #closed = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** Entries announced since the last read was sent (`announce()`). */
  #announced = 0;
  /** The loop sleeps until its next proof while hints flow: `announce()` may end that sleep early. */
  #awaitingProof = false;
  /** Every command of the reader goes through it: nothing waits forever on a closed or stalled connection. */
  readonly #guard: CommandGuard;
  /** When the read behind the last proof was sent (performance.now()). */
  #provedAt = Number.NEGATIVE_INFINITY;
  /** Reads sent, and how many of them were proving reads (the script before the XREAD). */
  #reads = 0;
  #provingReads = 0;
  /** Reads followed by a `readPauseMs` pause. */
  #pauses = 0;

  constructor(conn: RedisClient, opts: ReaderOptions, handlers: ReaderHandlers) {
    this.#conn = conn;
    this.#opts = opts;
    this.#h = handlers;
    this.#guard = new CommandGuard(conn, 'stream reader');
    conn.on('error', (err: unknown) => {
      if (!this.#closed) this.#h.onError(err);
    });
    if (isClusterClient(conn)) {
      conn.on('-node', (node: { options: { host?: string; port?: number } }) => {
        if (this.#owner?.startsWith(`${node.options.host}:${node.options.port}/`)) this.#ownerLost = true;
      });
    }
    conn.on('close', () => {
      this.#guard.rejectAll(new Error('connection closed'));
      if (!this.#closed && this.#status === 'ready') this.#setStatus('reconnecting');
    });
  }

  get status(): ReaderStatus { return this.#status; }
  get cursor(): string { return this.#cursor; }
  /** Entries ever added to the stream up to the cursor (`entries-added - counted` = entries behind); undefined while unknown. */
  get counted(): number | undefined { return this.#counted; }
  /** The stream epoch the reader follows. */
  get epoch(): string | undefined { return this.#epoch; }
  /** Reads sent so far, how many of them carried the proof script, and how many were followed by a pause (`readPauseMs`). */
  get reads(): { readonly total: number; readonly proving: number; readonly paused: number } {
    return { total: this.#reads, proving: this.#provingReads, paused: this.#pauses };
  }

  /** Captures the stream's end (before the cache serves), then starts the read loop. */
  async start(): Promise<void> {
    const sentAt = performance.now();
    await this.#sync(true);
    this.#setStatus('ready');
    this.#provedAt = sentAt;
    this.#h.onCaughtUp(sentAt);
    this.#loop = this.#run();
  }

  /**
   * An entry that this reader will read is on its way: its hint arrived, or this cache published
   * it. While hints flow, once `kAnnouncedReadAt` of them came since the last read, the reader
   * reads the stream without waiting for its next proof (a plain read: it proves nothing).
   */
  announce(): void {
    if (++this.#announced >= kAnnouncedReadAt && this.#awaitingProof) this.#wake?.();
  }

  async close(): Promise<void> {
    if (this.#closed) return this.#loop;
    this.#closed = true;
    this.#wake?.();
    this.#conn.disconnect();
    this.#guard.rejectAll(new Error('reader closed'));
    this.#setStatus('closed');
    await this.#loop;
  }

  #setStatus(next: ReaderStatus): void {
    const prev = this.#status;
    if (prev === next || prev === 'closed') return;
    this.#status = next;
    this.#h.onStatus(next, prev);
  }

  /** How long a non-blocking command may take before the connection counts as stalled. */
  get #commandMs(): number { return Math.max(2000, this.#opts.blockMs); }

  /** Forgets the position: adopts the stream as `info` shows it (the end, its epoch and chain head). */
  #adopt(info: StreamInfo | undefined): void {
    this.#cursor = info?.lastId ?? ZERO_ID;
    this.#counted = info?.entriesAdded ?? 0;
    this.#epoch = info?.epoch;
    this.#head = info?.head ?? ZERO_ID;
  }

  #gap(cause: GapCause, detail: string, info: StreamInfo | undefined): void {
    this.#adopt(info);
    this.#h.onGap(cause, detail);
  }

  /** Checks the server identity (restart) and the stream position. `initial` adopts the stream's end. */
  async #sync(initial: boolean): Promise<void> {
    const conn = this.#conn;
    if (isClusterClient(conn)) {
      if (await this.#syncOwner(conn, initial)) return;
    } else {
      const runId = parseInfo(await this.#guard.run(conn.info('server'), this.#commandMs)).get('run_id');
      if (!initial && this.#runId !== undefined && runId !== this.#runId) {
        this.#runId = runId;
        this.#gap('restart', `Redis run_id changed to ${runId}`, await this.#info());
        return;
      }
      this.#runId = runId;
    }
    const info = await this.#info();
    if (initial) this.#adopt(info);
    else this.#check(info);
  }

  /**
   * Cluster: the failover rule. A promoted replica may lack the newest entries its master
   * acknowledged. When the master serving the stream is another node (or the same address
   * with a new run_id), the reader reports a 'restart' gap, as for a restarted standalone
   * Redis (the chain would catch the loss only once a later entry arrives). True when it did.
   */
  async #syncOwner(conn: Cluster, initial: boolean): Promise<boolean> {
    const stream = this.#opts.stream;
    let identity: string | undefined;
    for (let i = 0; identity === undefined; i++) {
      await this.#info(); // routes a keyed command first, so ioredis knows the slot's master
      const before = slotOwner(conn, stream);
      identity = await this.#guard.run(slotOwnerIdentity(conn, stream), this.#commandMs);
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

  /** The stream as the script sees it (`pipelined`: see readStreamInfo). */
  #info(pipelined = false): Promise<StreamInfo | undefined> {
    return this.#guard.run(readStreamInfo(this.#conn, this.#opts.stream, pipelined), this.#commandMs);
  }

  /** Compares the stream as the script saw it with what this reader has seen (the counting rules). */
  #check(info: StreamInfo | undefined): void {
    const v = checkPosition({ cursor: this.#cursor, counted: this.#counted, epoch: this.#epoch, head: this.#head }, info);
    if (v === undefined) return;
    if (v.gap !== undefined) this.#gap(v.gap, v.detail, info);
    else this.#counted = v.counted;
  }

  async #run(): Promise<void> {
    const { stream, count, blockMs, proofEveryMs } = this.#opts;
    let failures = 0;
    let resync = false;
    while (!this.#closed) {
      try {
        if (resync) {
          await this.#sync(false);
          resync = false;
        }
        let sentAt = performance.now();
        let proving = StreamReader.proveEveryRead || sentAt - this.#provedAt >= proofEveryMs;
        if (!proving && this.#opts.hintsFlowing?.() === true && this.#announced < kAnnouncedReadAt) {
          // The hints drop the keys meanwhile; many announced entries end the wait early (a plain read).
          this.#awaitingProof = true;
          try {
            await this.#sleep(this.#provedAt + proofEveryMs - sentAt);
          } finally {
            this.#awaitingProof = false;
          }
          if (this.#closed) break;
          sentAt = performance.now();
          // The timer (the proof is due), or the announcements: then a plain read, unless the proof is due anyway.
          proving = this.#announced < kAnnouncedReadAt || sentAt - this.#provedAt >= proofEveryMs;
        }
        this.#announced = 0;
        let info: StreamInfo | undefined;
        let readP: Promise<unknown>;
        this.#reads++;
        if (proving) {
          this.#provingReads++;
          // Both commands go out in one write; the script answers at once, XREAD when entries arrive.
          // ioredis writes each command to the socket as it is issued: corked, the two leave in one
          // writev, so Redis reads and runs them back to back (the script describes the stream
          // just before the read) and the kernel carries one segment.
          const socket = isClusterClient(this.#conn) ? undefined : this.#conn.stream;
          socket?.cork();
          let infoP: Promise<StreamInfo | undefined>;
          try {
            infoP = this.#info(true);
            readP = this.#guard.run(this.#conn.xread('COUNT', count, 'BLOCK', blockMs, 'STREAMS', stream, this.#cursor), blockMs + this.#commandMs);
          } finally {
            socket?.uncork();
          }
          readP.catch(() => undefined); // awaited below, unless the script failed first
          info = await infoP;
          if (this.#ownerMoved()) {
            // Counts from another master prove nothing: let the read finish, then re-sync (failover rule).
            await readP.catch(() => undefined);
            resync = true;
            continue;
          }
          this.#check(info);
        } else {
          // A plain read: it ends by the time the next proof is due (BLOCK 0 would wait forever).
          const block = Math.min(blockMs, Math.max(1, Math.ceil(this.#provedAt + proofEveryMs - sentAt)));
          readP = this.#guard.run(this.#conn.xread('COUNT', count, 'BLOCK', block, 'STREAMS', stream, this.#cursor), block + this.#commandMs);
        }
        const reply = await readP;
        if (this.#ownerMoved()) { resync = true; continue; } // the reply may come from a new master
        if (this.#closed) break;
        failures = 0;
        this.#setStatus('ready');
        const pause = this.#opts.readPauseMs ?? 0;
        let n = 0;
        let covered = false; // with a pause: the newest entry read is covered by hints, or our own
        if (reply) {
          const entries = (reply as [string, [string, unknown][]][])[0]?.[1] ?? [];
          n = entries.length;
          await this.#apply(entries, info);
          if (this.#closed) break;
          const newest = entries[n - 1];
          covered = pause > 0 && newest !== undefined && (this.#opts.hinted?.(newest[0]) === true || peekFields(newest[1]).o === this.#opts.origin);
        }
        if (proving && n < count) {
          // This read returned every entry after the cursor: it must have reached the end the
          // script saw just before it. If not, an entry was deleted before it could be read.
          if (info !== undefined && compareStreamIds(info.lastId, this.#cursor) > 0) {
            this.#gap('trimmed', `entries up to ${info.lastId} were deleted before this reader read them (cursor ${this.#cursor})`, info);
          }
          this.#provedAt = sentAt;
          this.#h.onCaughtUp(sentAt);
        }
        if (covered && n < count && !this.#closed) {
          this.#pauses++;
          await this.#sleep(pause);
        }
      } catch (err) {
        if (this.#closed) break;
        this.#h.onError(err);
        this.#setStatus('reconnecting');
        resync = true;
        if (err instanceof StalledError) this.#conn.disconnect(true); // a silent partition: make a new connection
        await this.#sleep(backoff(failures++));
      }
    }
  }

  /** Waits `ms`, or less if the reader is closed meanwhile. */
  async #sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      setTimeout(resolve, ms).unref();
    });
    this.#wake = undefined;
  }

  /**
   * Applies entries in stream order. A chained entry is applied only after its continuity is
   * proven (its predecessor is the last chained entry applied, its epoch the one followed);
   * otherwise the gap is reported first. `info` is the stream as the script saw it before the read.
   *
   * A large reply is applied in slices of about `kApplySliceMs`, with a turn of the event loop
   * between them, so that what waits (a hint, a request served from the cache) is not held for
   * the whole batch: a 1,000-entry reply takes several ms. It changes nothing a read of fewer
   * entries would not: no proof is claimed before the last entry is applied.
   */
  async #apply(entries: [string, unknown][], info: StreamInfo | undefined): Promise<void> {
    const { origin, secret, maxEntryBytes } = this.#opts;
    let sliceStart = performance.now();
    for (let i = 0; i < entries.length; i++) {
      if ((i & 15) === 15 && performance.now() - sliceStart >= kApplySliceMs) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (this.#closed) return;
        sliceStart = performance.now();
      }
      const [id, fields] = entries[i]!;
      if (compareStreamIds(id, this.#cursor) <= 0) continue; // already covered by a gap reset
      const f = peekFields(fields);
      if (f.p !== undefined) {
        if (this.#epoch !== undefined && f.e !== this.#epoch) {
          this.#counted = undefined;
          this.#h.onGap('reset', `entry ${id} is of stream epoch ${f.e}, reader followed ${this.#epoch} (the stream was re-created)`);
        } else if (f.p !== this.#head) {
          this.#counted = undefined;
          this.#h.onGap('trimmed', `entry ${id} follows ${f.p}, but the last chained entry this reader applied is ${this.#head}`);
        }
        this.#epoch = f.e;
        this.#head = id;
      }
      this.#cursor = id;
      if (this.#counted !== undefined) this.#counted++;
      if (info !== undefined && id === info.lastId) this.#counted = info.entriesAdded;
      // Our own echo was applied locally when published: skip it before decoding (a publisher
      // would otherwise re-parse every key it sends). With signing on, decode first, so that a
      // forged origin cannot suppress invalidations.
      if (secret === undefined && f.o === origin) continue;
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
