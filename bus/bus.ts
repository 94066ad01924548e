import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { threadId } from 'node:worker_threads';
import { closeClient, connect, duplicateForBlocking, type RedisClient, type RedisInput } from './connection.js';
import { ConnectionError } from './errors.js';
import { HostWake } from './host-wake.js';
import { busKeys, hostPortKey, peerRegistry, wakeChannel, type BusKeys } from './keys.js';
import type { Appended } from './lua-append.js';
import { Publisher } from './publisher.js';
import { defaultProofEveryMs, StreamReader, type ReaderHandlers, type ReaderStatus } from './reader.js';
import { compareStreamIds, ZERO_ID } from './stream-id.js';
import { completeInvalidation, type DecodedEntry, type Invalidation } from './wire.js';
import { WakeHints, type WakeHandlers } from './wake.js';

export interface BusOptions {
  readonly redis: RedisInput;
  readonly namespace: string;
  readonly prefix: string;
  readonly secret?: string | Buffer | undefined;
  readonly maxEntryBytes: number;
  readonly streamMaxLen: number;
  readonly streamMaxAgeMs?: number | undefined;
  readonly readCount: number;
  readonly blockMs: number;
  /** How long `open` waits for Redis before it rejects. @defaultValue 10_000 */
  readonly connectTimeoutMs?: number | undefined;
  /** Skip the reader (publish-only clients such as the CLI's `publish`). */
  readonly publishOnly?: boolean | undefined;
  /** Called when invalidations that failed to publish are waiting to be re-published (true) or all out (false). */
  readonly onBacklog?: ((pending: boolean) => void) | undefined;
  /**
   * `'pubsub'`: publish a wake-up hint beside each stream entry, and (with a reader and an
   * `onHint` handler) subscribe to them, to drop keys before the stream entry is read
   * (bus/wake.ts). `'host'`: send each entry straight to the caches of this host over loopback
   * UDP, and (with a reader and an `onHint` handler) take theirs (bus/host-wake.ts). The stream
   * stays the source of truth. @defaultValue 'stream'
   */
  readonly wake?: 'stream' | 'pubsub' | 'host' | undefined;
  /**
   * `wake: 'host'`: how this cache takes its peers' datagrams. `'broadcast'`: on the host's
   * shared loopback broadcast port, so that a publish is one datagram for all peers (when the
   * host's loopback proves it delivers broadcasts; else as `'unicast'`). `'unicast'`: on its own
   * 127.0.0.1 port, one datagram per publish and peer. @defaultValue 'broadcast'
   */
  readonly hostFanout?: 'broadcast' | 'unicast' | undefined;
}

/** The reader's handlers, plus where hints go (option `wake: 'pubsub'` or `'host'`). */
export type BusHandlers = ReaderHandlers & Partial<Pick<WakeHandlers, 'onHint'>>;

/**
 * Options wake: 'pubsub' and 'host': after a stream read whose newest entry is covered by hints (or its own),
 * the reader waits this long (ms) before the next one, so that under traffic one read takes a batch.
 */
export const kHintedReadPauseMs = 5;

/**
 * Options wake: 'pubsub' and 'host': hints count as flowing for this long (ms) after the last one
 * arrived or this cache last published; meanwhile the reader only sends its proving reads.
 */
export const kHintFlowMs = 1000;

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(invalid URL)';
  }
}

/** A unique id for this bus instance: host, pid, thread, random. */
export function newOrigin(): string {
  return `${hostname()}:${process.pid}:${threadId}:${randomBytes(4).toString('hex')}`;
}

/**
 * Everything that crosses processes for one namespace: the publisher on the command
 * connection and the stream reader on its own connection. Knows nothing of caches: decoded
 * invalidations go to the handlers.
 */
export class Bus {
  readonly keys: BusKeys;
  readonly origin: string;
  readonly client: RedisClient;
  readonly #owned: boolean;
  readonly #publisher: Publisher;
  readonly #reader: StreamReader | undefined;
  readonly #wake: WakeHints | undefined;
  readonly #hostWake: HostWake | undefined;
  #closing: Promise<void> | undefined;
  /** The newest entry whose hint arrived (option wake: 'pubsub'; a datagram of wake: 'host' names no ID). */
  #lastHint = ZERO_ID;
  #lastHintAt = Number.NEGATIVE_INFINITY;
  /** When this cache last published (options wake: 'pubsub' and 'host': its own entries need no prompt read). */
  #lastOwnAt = Number.NEGATIVE_INFINITY;
  readonly #hinting: boolean;
  /** Origins that sent hints lately (origin → when), and when a stream entry last came from one that did not. */
  readonly #hintOrigins = new Map<string, number>();
  #lastUnhintedAt = Number.NEGATIVE_INFINITY;
  /** Option wake: 'pubsub': the channel hints go to. */
  readonly #wakeChannel: string | undefined;

  private constructor(opts: BusOptions, handlers: BusHandlers) {
    this.keys = busKeys(opts.prefix, opts.namespace);
    this.origin = newOrigin();
    const conn = connect(opts.redis, `cachebus:${opts.namespace}:cmd`);
    this.client = conn.client;
    this.#owned = conn.owned;
    if (this.#owned) this.client.on('error', (err: unknown) => handlers.onError(err));
    const onHint = handlers.onHint;
    const hinting = !opts.publishOnly && opts.wake !== undefined && opts.wake !== 'stream' && onHint !== undefined;
    this.#hinting = hinting;
    this.#wakeChannel = opts.wake === 'pubsub' ? wakeChannel(this.keys) : undefined;
    const onHintArrived = (e: DecodedEntry): void => {
      try {
        onHint?.(e); // the drop first: the bookkeeping below is for the reader's next decision, not for this hint
      } finally {
        this.#reader?.announce();
        if (compareStreamIds(e.id, this.#lastHint) > 0) this.#lastHint = e.id;
        this.#lastHintAt = performance.now();
        this.#noteHintOrigin(e.origin, this.#lastHintAt);
      }
    };
    if (opts.wake === 'host') {
      // Sends even without a reader (a relay-mode cache publishes too); listens only with one.
      this.#hostWake = new HostWake(
        this.client,
        {
          registry: peerRegistry(this.keys), portKey: hostPortKey(this.keys, hostname()), fanout: opts.hostFanout ?? 'broadcast',
          tag: wakeChannel(this.keys), origin: this.origin, secret: opts.secret, receive: hinting,
        },
        { onHint: onHintArrived, onError: (err) => handlers.onError(err) },
      );
    }
    const hostWake = this.#hostWake;
    this.#publisher = new Publisher(this.client, {
      stream: this.keys.stream,
      origin: this.origin,
      secret: opts.secret,
      maxEntryBytes: opts.maxEntryBytes,
      streamMaxLen: opts.streamMaxLen,
      streamMaxAgeMs: opts.streamMaxAgeMs,
      onBacklog: opts.onBacklog,
      wakeChannel: this.#wakeChannel,
      hint: hostWake === undefined ? undefined : (inv) => hostWake.send(inv),
    });
    if (!opts.publishOnly) {
      const pause = hinting ? Math.min(kHintedReadPauseMs, defaultProofEveryMs(opts.blockMs)) : 0;
      this.#reader = new StreamReader(
        duplicateForBlocking(this.client, `cachebus:${opts.namespace}:reader`),
        {
          stream: this.keys.stream,
          origin: this.origin,
          blockMs: opts.blockMs,
          count: opts.readCount,
          secret: opts.secret,
          maxEntryBytes: opts.maxEntryBytes,
          proofEveryMs: defaultProofEveryMs(opts.blockMs),
          // With hints, keys drop on the hint: the stream is read in batches, one read per few ms under traffic.
          readPauseMs: pause,
          // Its hint came, or hints are flowing (the stream reply often comes before its hint).
          hinted: (id) => compareStreamIds(id, this.#lastHint) <= 0 || performance.now() - this.#lastHintAt < 2 * pause,
          hintsFlowing: hinting ? () => this.#hintsFlowing() : undefined,
        },
        hinting ? { ...handlers, onEntry: (e) => { this.#noteEntry(e); handlers.onEntry(e); } } : handlers,
      );
      if (hinting && opts.wake === 'pubsub') {
        this.#wake = new WakeHints(
          this.client, `cachebus:${opts.namespace}:wake`,
          { channel: wakeChannel(this.keys), origin: this.origin, secret: opts.secret, maxEntryBytes: opts.maxEntryBytes },
          { onHint: onHintArrived, onError: (err) => handlers.onError(err) },
        );
      }
    }
  }

  /**
   * Hints flow: one came (or this cache published) lately, and no stream entry came lately from
   * an origin that sends none (a publisher on another host in 'host' mode, a 'stream' publisher,
   * the outbox relay, a foreign XADD): such entries are then read as they arrive, not with the
   * next proving read.
   */
  #hintsFlowing(): boolean {
    const now = performance.now();
    return now - Math.max(this.#lastHintAt, this.#lastOwnAt) < kHintFlowMs && now - this.#lastUnhintedAt >= kHintFlowMs;
  }

  #noteHintOrigin(origin: string, at: number): void {
    const origins = this.#hintOrigins;
    if (!origins.has(origin) && origins.size >= 256) {
      for (const [o, t] of origins) if (at - t >= kHintFlowMs) origins.delete(o); // publishers come and go
    }
    origins.set(origin, at);
  }

  /** A stream entry applied (another origin's): was its origin sending hints? */
  #noteEntry(e: DecodedEntry): void {
    const at = this.#hintOrigins.get(e.origin);
    if (at === undefined || performance.now() - at >= kHintFlowMs) this.#lastUnhintedAt = performance.now();
  }

  /** Connects, captures the stream's end, starts reading. Rejects with ConnectionError if Redis stays unreachable. */
  static async open(opts: BusOptions, handlers: BusHandlers): Promise<Bus> {
    let lastError = '';
    const bus = new Bus(opts, { ...handlers, onError: (err) => { lastError = String((err as Error)?.message ?? err); handlers.onError(err); } });
    const timeoutMs = opts.connectTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const where = typeof opts.redis === 'string' ? ` at ${redactUrl(opts.redis)}` : '';
        reject(new ConnectionError(
          `cannot reach Redis${where} within ${timeoutMs} ms${lastError ? ` (${lastError})` : ''}: set options.redis or REDIS_URL, or start redis-server`,
        ));
      }, timeoutMs);
    });
    try {
      await Promise.race([Promise.all([bus.#reader ? bus.#reader.start() : bus.client.ping(), bus.#wake?.start(), bus.#hostWake?.start()]), timeout]);
    } catch (err) {
      await bus.close();
      throw err instanceof ConnectionError ? err : new ConnectionError(`cannot open the bus: ${(err as Error).message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    return bus;
  }

  /** Counters of the wake-up hints (undefined unless option `wake: 'pubsub'` subscribed). */
  get wakeStats(): WakeHints['stats'] | undefined { return this.#wake?.stats; }
  /** Counters of the same-host datagrams (undefined unless option `wake: 'host'`). */
  get hostWakeStats(): HostWake['stats'] | undefined { return this.#hostWake?.stats; }

  get status(): ReaderStatus { return this.#reader?.status ?? 'ready'; }
  get cursor(): string | undefined { return this.#reader?.cursor; }
  /** Entries ever added to the stream up to the reader's cursor (undefined without a reader). */
  get counted(): number | undefined { return this.#reader?.counted; }
  /** Stream reads sent so far, how many carried the proof script, how many were followed by a pause (undefined without a reader). */
  get reads(): { readonly total: number; readonly proving: number; readonly paused: number } | undefined { return this.#reader?.reads; }

  /** Keys and tags whose publish failed, waiting to be re-published. */
  get backlog(): number { return this.#publisher.backlog; }

  publish(inv: Partial<Invalidation>): Promise<string[]> {
    if (this.#hinting) this.#noteOwn();
    return this.#publisher.publish(inv);
  }

  /**
   * The `appendArgs` tail for a script that appends this invalidation itself (bus/lua-append.ts),
   * and `hint()`, to call once that script ran: with option `wake`, it sends the hints a
   * `publish` would (a PUBLISH of each entry, or the datagrams to same-host peers), after the
   * entry is in the stream. Without it, peers whose hints flow read the entry only with their
   * next proving read (docs/wake-up.md).
   */
  appendArgsFor(inv: Partial<Invalidation>): Appended {
    const { args, entries } = this.#publisher.appendArgsFor(inv);
    return { args, hint: () => this.#hintAppended(inv, entries) };
  }

  /** This cache published (with hints): its own entries need no prompt read, and they count toward the reader's next one. */
  #noteOwn(): void {
    this.#lastOwnAt = performance.now();
    this.#reader?.announce();
  }

  #hintAppended(inv: Partial<Invalidation>, entries: readonly (readonly string[])[]): void {
    if (this.#hinting) this.#noteOwn();
    this.#hostWake?.send(completeInvalidation(inv));
    if (this.#wakeChannel !== undefined) {
      // No ID is known here (the script does not return it): the hint names none.
      for (const fields of entries) this.client.publish(this.#wakeChannel, JSON.stringify([ZERO_ID, fields])).catch(() => undefined);
    }
  }

  /** Waits for pending publishes, stops the reader, closes the connections cachebus opened. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#publisher.flushed();
      this.#publisher.close();
      this.#wake?.close();
      await this.#hostWake?.close();
      await this.#reader?.close();
      if (this.#owned) await closeClient(this.client);
    })();
    return this.#closing;
  }
}
