import { randomBytes } from 'node:crypto';
import { errorReporter } from '../report-error.js';
import { EventEmitter } from 'node:events';
import { Bus } from '../bus.js';
import { closeClient, connect, type RedisClient, type RedisInput } from '../connection.js';
import { ClosedError, ConnectionError, InvalidOptionError } from '../errors.js';
import type { GapCause, ReaderHandlers, ReaderStatus } from '../reader.js';
import type { DecodedEntry } from '../wire.js';
import { RELAY_ENV, RELAY_TAG, RELAY_VERSION, hostNow, secretId, type HelloMessage, type RefuseMessage, type StreamMessage } from './protocol.js';
import { BroadcastTransport, IpcTransport, type HubTransport, type IpcTarget } from './transports.js';

export interface RelayHubOptions {
  /** Redis (URL, cluster seed URLs, options or client) to read the streams from. @defaultValue `process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'` */
  redis?: RedisInput;
  /**
   * HMAC secret the entries are signed with. Must be the caches' own: the hub refuses a cache
   * whose options.secret differs (or is set when this is not, or the reverse). @defaultValue none
   */
  secret?: string | Buffer;
  /** Largest entry accepted, bytes. @defaultValue `65_536` */
  maxEntryBytes?: number;
  /** Most entries per XREAD. @defaultValue `1000` */
  readCount?: number;
  /**
   * XREAD BLOCK timeout, ms: an idle hub proves it is current this often. Caches whose
   * maxStaleMs is below twice this are refused. @defaultValue `1000`
   */
  blockMs?: number;
  /** Least time between two beats while entries flow, ms. @defaultValue `min(100, blockMs)` */
  beatMs?: number;
  /** How long opening a namespace's reader may wait for Redis, ms. @defaultValue `10_000` */
  connectTimeoutMs?: number;
  /** Serve node:cluster workers (when this is the primary) and children passed to `attach`. @defaultValue `true` */
  ipc?: boolean;
  /**
   * Below this many node:cluster workers (plus attached children), caches with relay 'auto'
   * are advised to read Redis themselves: with few workers a direct reader is one hop faster
   * at the same CPU and connection count (docs/scaling.md). 0 relays always. Threads are
   * always relayed. @defaultValue `4`
   */
  minWorkers?: number;
  /** Serve worker threads and caches of this process over BroadcastChannel. @defaultValue `true` */
  broadcast?: boolean;
  /** Set `process.env.CACHEBUS_RELAY` so workers forked and threads started later find the hub. @defaultValue `true` */
  advertise?: boolean;
}

export const kRelayHubDefaults = {
  maxEntryBytes: 65_536,
  readCount: 1000,
  blockMs: 1000,
  connectTimeoutMs: 10_000,
  minWorkers: 4,
  ipc: true,
  broadcast: true,
  advertise: true,
} as const satisfies RelayHubOptions;

/** Counters of a hub (plain numbers). */
export interface RelayHubStats {
  /** Hellos received (first subscriptions and re-hellos while beats were late). */
  hellos: number;
  entriesRelayed: number;
  messagesSent: number;
  beats: number;
  gaps: number;
  refused: number;
  /** Hellos answered "read directly" (fewer workers than minWorkers). */
  advisedDirect: number;
  sendErrors: number;
}

export interface RelayHubEvents {
  error: [err: unknown];
  gap: [info: { topic: string; cause: GapCause; detail: string }];
}

interface Topic {
  readonly name: string;
  readonly prefix: string;
  readonly namespace: string;
  bus: Bus | undefined;
  opening: Promise<Bus> | undefined;
  seq: number;
  status: ReaderStatus;
  /** hostNow() ms at which the XREAD that last proved the reader caught up was sent (0: never). */
  caughtUpAt: number;
  /** `at` of the last beat sent (rate limit: a beat goes out once the proof moved on by beatMs). */
  lastBeatAt: number;
  pending: DecodedEntry[];
}

type Resolved = Required<Omit<RelayHubOptions, 'secret' | 'beatMs'>> & { secret?: string | Buffer; beatMs: number };

function resolve(o: RelayHubOptions): Resolved {
  const r = { ...kRelayHubDefaults, ...o } as Resolved;
  for (const n of ['maxEntryBytes', 'readCount', 'blockMs', 'connectTimeoutMs', 'minWorkers'] as const) {
    const v = r[n];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < (n === 'minWorkers' ? 0 : 1)) {
      throw new InvalidOptionError(`options.${n} must be a ${n === 'minWorkers' ? 'non-negative' : 'positive'} integer (got ${String(v)})`);
    }
  }
  r.beatMs ??= Math.min(100, r.blockMs);
  if (typeof r.beatMs !== 'number' || !(r.beatMs > 0)) throw new InvalidOptionError(`options.beatMs must be a positive number (got ${String(r.beatMs)})`);
  r.redis ??= process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  return r;
}

/**
 * One invalidation reader per host: reads each namespace's stream once (one blocking Redis
 * connection per namespace, plus one command connection) and fans the entries, gaps and
 * beats out to the host's caches — node:cluster workers over IPC, worker threads (and caches
 * of this process) over BroadcastChannel. Namespaces are opened on the first cache's hello.
 * Start it in the node:cluster primary (or the sidecar) before forking: see docs/scaling.md.
 */
export class RelayHub extends EventEmitter<RelayHubEvents> {
  /** Random id; caches clear when the hub that serves them changes. */
  readonly id = randomBytes(6).toString('hex');
  readonly stats: RelayHubStats = { hellos: 0, entriesRelayed: 0, messagesSent: 0, beats: 0, gaps: 0, refused: 0, advisedDirect: 0, sendErrors: 0 };
  readonly #o: Resolved;
  readonly #secretId: string | undefined;
  readonly #topics = new Map<string, Topic>();
  readonly #transports: HubTransport[] = [];
  readonly #ipc: IpcTransport | undefined;
  #client: RedisClient | undefined;
  #owned = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #report = errorReporter(this as unknown as EventEmitter, () => 'cachebus:relay');

  private constructor(options: RelayHubOptions) {
    super();
    this.#o = resolve(options);
    this.#secretId = secretId(this.#o.secret);
    const hello = (m: HelloMessage, reply: (r: RefuseMessage) => void): void => this.#hello(m, reply);
    const advise = (m: HelloMessage, workers: number): RefuseMessage | undefined => {
      if (!m.auto || this.#closed || workers >= this.#o.minWorkers) return undefined;
      this.stats.advisedDirect++;
      return { t: RELAY_TAG, topic: m.topic, type: 'refuse', client: m.client, code: 'E_RELAY_DIRECT',
        message: `${workers} worker(s) < minWorkers ${this.#o.minWorkers}: read directly` };
    };
    if (this.#o.ipc) this.#transports.push((this.#ipc = new IpcTransport(hello, advise, () => this.stats.sendErrors++)));
    if (this.#o.broadcast) this.#transports.push(new BroadcastTransport(hello));
    if (this.#o.advertise) process.env[RELAY_ENV] = String(process.pid);
  }

  /** Starts a hub: listens for caches at once; connects to Redis when a cache asks for a namespace. */
  static start(options: RelayHubOptions = {}): RelayHub {
    return new RelayHub(options);
  }

  /** Serves a child process forked with an IPC channel (node:cluster workers are served already). */
  attach(child: IpcTarget): this {
    if (!this.#ipc) throw new InvalidOptionError('options.ipc is false: this hub does not serve children');
    this.#ipc.attach(child);
    return this;
  }

  /** Per namespace: reader status, ms since the reader was last caught up, subscribers over IPC. */
  health(): { ok: boolean; topics: Record<string, { status: ReaderStatus; staleForMs: number; ipcSubscribers: number }> } {
    const topics: Record<string, { status: ReaderStatus; staleForMs: number; ipcSubscribers: number }> = {};
    let ok = !this.#closed;
    const now = hostNow();
    for (const t of this.#topics.values()) {
      const staleForMs = t.caughtUpAt === 0 ? Infinity : Math.max(0, now - t.caughtUpAt);
      if (t.status !== 'ready' || staleForMs > 2 * this.#o.blockMs + 1000) ok = false;
      topics[`${t.prefix}:${t.namespace}`] = { status: t.status, staleForMs, ipcSubscribers: this.#ipc?.count(t.name) ?? 0 };
    }
    return { ok, topics };
  }

  /** Tells every cache the hub is gone (they stop serving at once), stops readers, closes connections. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      for (const t of this.#topics.values()) {
        this.#flush(t);
        this.#send(t, { type: 'status', status: 'closed', previous: t.status });
      }
      if (this.#o.advertise && process.env[RELAY_ENV] === String(process.pid)) delete process.env[RELAY_ENV];
      for (const tr of this.#transports) tr.close();
      await Promise.allSettled([...this.#topics.values()].map(async (t) => (t.bus ?? (await t.opening?.catch(() => undefined)))?.close()));
      const c = this.#client;
      if (c && this.#owned) {
        await closeClient(c);
      }
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- internals -------------------------------------------------------------------------

  #hello(m: HelloMessage, reply: (r: RefuseMessage) => void): void {
    if (this.#closed) return;
    this.stats.hellos++;
    const refuse = (code: string, message: string): void => {
      this.stats.refused++;
      reply({ t: RELAY_TAG, topic: m.topic, type: 'refuse', client: m.client, code, message });
    };
    if (m.v !== RELAY_VERSION) return refuse('E_RELAY_REFUSED', `relay protocol ${m.v} is not ${RELAY_VERSION}: update cachebus in the primary and the workers together`);
    if (!(m.maxStaleMs >= 2 * this.#o.blockMs)) {
      return refuse('E_RELAY_REFUSED', `options.maxStaleMs (${m.maxStaleMs}) must be at least twice the relay hub's blockMs (${this.#o.blockMs}): raise maxStaleMs or lower the hub's blockMs`);
    }
    if (m.secret !== this.#secretId) {
      const mine = this.#secretId === undefined ? 'has no secret' : 'has another secret';
      return refuse('E_RELAY_REFUSED', m.secret === undefined
        ? 'the relay hub verifies signed entries (its options.secret is set) but this cache has no options.secret: give the cache the hub\'s secret, or set options.relay to false'
        : `this cache's options.secret does not match the relay hub's (the hub ${mine}): pass the same secret to startRelayHub() and createCache(), or set options.relay to false`);
    }
    const [prefix, namespace] = m.topic.split('\u0000') as [string, string | undefined];
    if (namespace === undefined) return refuse('E_RELAY_REFUSED', 'malformed topic');
    let t = this.#topics.get(m.topic);
    if (t === undefined) {
      t = { name: m.topic, prefix, namespace, bus: undefined, opening: undefined, seq: 0, status: 'connecting', caughtUpAt: 0, lastBeatAt: 0, pending: [] };
      this.#topics.set(m.topic, t);
    }
    if (t.caughtUpAt > 0) this.#beat(t, true); // the new cache learns how current the reader is
    if (t.bus !== undefined) return;
    let opening = t.opening;
    if (opening === undefined) {
      const topic = t;
      opening = topic.opening = this.#open(topic);
      opening.then((bus) => { topic.bus = bus; }, (err: unknown) => {
        topic.opening = undefined;
        this.#topics.delete(topic.name);
        this.#error(err);
      });
    }
    opening.catch((err: unknown) => {
      const code = err instanceof ConnectionError ? err.code : 'E_RELAY_REFUSED';
      refuse(code, `the relay hub cannot read ${namespace}: ${(err as Error)?.message ?? err}`);
    });
  }

  #open(t: Topic): Promise<Bus> {
    if (this.#client === undefined) {
      const conn = connect(this.#o.redis, 'cachebus:relay:cmd');
      this.#client = conn.client;
      this.#owned = conn.owned;
      if (conn.owned) conn.client.on('error', (err: unknown) => this.#error(err));
    }
    const o = this.#o;
    const handlers: ReaderHandlers = {
      onEntry: (e) => {
        t.pending.push(e);
        if (t.pending.length === 1) queueMicrotask(() => this.#flush(t));
      },
      onGap: (cause, detail) => {
        this.#flush(t);
        this.stats.gaps++;
        this.#send(t, { type: 'gap', cause, detail });
        if (this.listenerCount('gap') > 0) this.emit('gap', { topic: `${t.prefix}:${t.namespace}`, cause, detail });
      },
      onBadEntry: (reason, id, message) => {
        this.#flush(t);
        this.#send(t, { type: 'bad', reason, id, message });
      },
      onStatus: (status, previous) => {
        this.#flush(t);
        t.status = status;
        this.#send(t, { type: 'status', status, previous });
      },
      onCaughtUp: (at) => {
        // `at` is when the proving XREAD was sent (performance.now()), turned into the host clock.
        // A late reply (the hub was frozen) thus yields an old beat, never a fresh one (I3).
        this.#flush(t);
        t.caughtUpAt = Math.max(t.caughtUpAt, hostNow() - (performance.now() - at));
        this.#beat(t, false);
      },
      onError: (err) => this.#error(err),
    };
    return Bus.open({
      redis: this.#client, namespace: t.namespace, prefix: t.prefix, secret: o.secret, maxEntryBytes: o.maxEntryBytes,
      streamMaxLen: 0, readCount: o.readCount, blockMs: o.blockMs, connectTimeoutMs: o.connectTimeoutMs,
    }, handlers).then((bus) => {
      if (this.#closed) return bus.close().then(() => { throw new ClosedError('relay hub'); });
      return bus;
    });
  }

  #beat(t: Topic, force: boolean): void {
    // Limited by how far the proof moved, not by the clock: after a stale beat (a late reply),
    // the first fresh proof goes out at once.
    if (!force && t.caughtUpAt - t.lastBeatAt < this.#o.beatMs) return;
    t.lastBeatAt = t.caughtUpAt;
    this.stats.beats++;
    this.#send(t, this.#secretId === undefined ? { type: 'beat', at: t.caughtUpAt } : { type: 'beat', at: t.caughtUpAt, secret: this.#secretId });
  }

  #flush(t: Topic): void {
    if (t.pending.length === 0) return;
    const entries = t.pending;
    t.pending = [];
    this.stats.entriesRelayed += entries.length;
    this.#send(t, { type: 'entries', entries });
  }

  #send(t: Topic, body: DistributiveOmit<StreamMessage, 't' | 'topic' | 'hub' | 'seq'>): void {
    const msg = { t: RELAY_TAG, topic: t.name, hub: this.id, seq: ++t.seq, ...body } as StreamMessage;
    for (const tr of this.#transports) this.stats.messagesSent += tr.send(t.name, msg);
  }

  #error(err: unknown): void {
    this.#report(err);
  }

}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** Starts a relay hub in this process (the node:cluster primary, or the sidecar). */
export function startRelayHub(options: RelayHubOptions = {}): RelayHub {
  return RelayHub.start(options);
}

