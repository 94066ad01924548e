import { randomBytes } from 'node:crypto';
import { BroadcastChannel, isMainThread } from 'node:worker_threads';
import { ConnectionError, InvalidOptionError, RelayError } from '../bus/errors.js';
import type { ReaderHandlers } from '../bus/reader.js';
import {
  HELLO_CHANNEL, isRelayMessage, RELAY_ENV, RELAY_TAG, RELAY_VERSION, topicChannel, topicOf, hostNow, secretId,
  type HelloMessage, type RelayMessage, type StreamMessage,
} from '../bus/relay/protocol.js';

/**
 * Where a cache takes its invalidations from: `false` its own Redis reader; `'ipc'` the relay
 * hub in the parent process (the node:cluster primary); `'broadcast'` the hub in this process
 * (worker threads, or the hub's own thread); `'auto'` the relay when a hub advertised itself
 * (`CACHEBUS_RELAY`) in the parent or this process, else its own reader.
 */
export type RelayMode = 'auto' | 'ipc' | 'broadcast' | false;
export const RELAY_MODES: readonly RelayMode[] = ['auto', 'ipc', 'broadcast', false];

/** Picks the transport for `mode`; false means "read Redis directly". */
export function resolveRelayMode(mode: RelayMode): 'ipc' | 'broadcast' | false {
  if (mode !== 'auto') return mode;
  const hub = Number(process.env[RELAY_ENV]);
  if (!Number.isInteger(hub) || hub <= 0) return false;
  if (hub === process.pid) return 'broadcast';
  if (isMainThread && typeof process.send === 'function' && hub === process.ppid) return 'ipc';
  return false;
}

export interface RelayClientOptions {
  readonly prefix: string;
  readonly namespace: string;
  /** The cache's publishing origin (once its bus exists): its own entries come back and are skipped. */
  readonly origin: () => string | undefined;
  readonly maxStaleMs: number;
  /** How long `open` waits for the hub's first beat. */
  readonly connectTimeoutMs: number;
  /** relay 'auto': accept the hub's advice to read directly (while opening only). */
  readonly auto: boolean;
  /** The cache's HMAC secret: the hub must verify with the same one (or both with none). */
  readonly secret?: string | Buffer | undefined;
}

/** One shared `process.on('message')` per process, dispatching by topic. */
const ipcClients = new Map<string, Set<RelayClient>>();
const onIpcMessage = (m: unknown): void => {
  if (!isRelayMessage(m)) return;
  const set = ipcClients.get(m.topic);
  if (set) for (const c of set) c.receive(m);
};

/**
 * A cache's end of the relay: sends hello (again while no beat arrives), checks that the hub's
 * messages come in sequence from one hub (else a gap: clear), and hands entries, gaps and
 * beats to the same handlers a direct reader would call.
 */
export class RelayClient {
  readonly mode: 'ipc' | 'broadcast';
  readonly #o: RelayClientOptions;
  readonly #h: ReaderHandlers;
  readonly #topic: string;
  readonly #id = randomBytes(6).toString('hex');
  readonly #secretId: string | undefined;
  #channel: BroadcastChannel | undefined;
  #helloChannel: BroadcastChannel | undefined;
  #hub: string | undefined;
  #seq = 0;
  /** `at` of the last beat taken as proof (host clock); -Infinity once the hub said it closed. */
  #lastBeat = 0;
  /** Id of a hub that announced `closed`: its beats prove nothing any more. */
  #closedHub: string | undefined;
  /** Id of the last hub whose secret mismatch was reported (reported once per hub). */
  #mismatchHub: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #opened: { resolve: (direct: boolean) => void; reject: (e: unknown) => void } | undefined;
  #closed = false;

  private constructor(mode: 'ipc' | 'broadcast', o: RelayClientOptions, h: ReaderHandlers) {
    this.mode = mode;
    this.#o = o;
    this.#h = h;
    this.#topic = topicOf(o.prefix, o.namespace);
    this.#secretId = secretId(o.secret);
  }

  /** Whether the hub's last proof is younger than maxStaleMs (false once the hub closed). */
  get current(): boolean {
    return hostNow() - this.#lastBeat <= this.#o.maxStaleMs;
  }

  /**
   * Subscribes and waits for the hub's first beat; rejects with RelayError (or ConnectionError)
   * otherwise. Resolves undefined when the hub advises this 'auto' cache to read directly.
   */
  static async open(mode: 'ipc' | 'broadcast', o: RelayClientOptions, h: ReaderHandlers): Promise<RelayClient | undefined> {
    if (mode === 'ipc' && typeof process.send !== 'function') {
      throw new InvalidOptionError("options.relay is 'ipc' but this process has no IPC channel to a parent: use 'auto', 'broadcast' or false");
    }
    const c = new RelayClient(mode, o, h);
    const ready = new Promise<boolean>((resolve, reject) => { c.#opened = { resolve, reject }; });
    c.#subscribe();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new RelayError('E_RELAY_UNAVAILABLE',
        `no relay hub answered within ${o.connectTimeoutMs} ms (options.relay '${mode}'): start one with startRelayHub() ` +
        `in the ${mode === 'ipc' ? 'node:cluster primary before forking' : "process's main thread"}, or set options.relay to false`)), o.connectTimeoutMs);
    });
    try {
      if (await Promise.race([ready, timeout])) {
        c.close();
        return undefined;
      }
    } catch (err) {
      c.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return c;
  }

  /** Unsubscribes. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    if (this.mode === 'ipc') {
      const set = ipcClients.get(this.#topic);
      set?.delete(this);
      if (set?.size === 0) ipcClients.delete(this.#topic);
      if (ipcClients.size === 0) process.off('message', onIpcMessage);
      this.#post('bye');
    } else {
      this.#channel?.close();
      this.#helloChannel?.close();
    }
  }

  /** @internal one message from the hub. */
  receive(m: RelayMessage): void {
    if (this.#closed || m.topic !== this.#topic) return;
    if (m.type === 'refuse') {
      if (m.client !== this.#id) return;
      if (m.code === 'E_RELAY_DIRECT') {
        this.#opened?.resolve(true);
        return;
      }
      const err = m.code === 'E_REDIS_UNAVAILABLE' ? new ConnectionError(m.message) : new RelayError('E_RELAY_REFUSED', m.message);
      if (this.#opened) this.#opened.reject(err);
      else this.#h.onError(err);
      return;
    }
    if (m.type === 'hello' || m.type === 'bye') return;
    try {
      this.#stream(m as StreamMessage);
    } catch (err) {
      // A malformed message from the hub: reported, and the cache clears (it may have missed something).
      this.#h.onError(err);
      this.#h.onGap('missing', `malformed relay message: ${(err as Error)?.message ?? err}`);
    }
  }

  #stream(m: StreamMessage): void {
    this.#sequence(m);
    switch (m.type) {
      case 'beat': {
        if (m.hub === this.#closedHub) break; // a closed hub proves nothing
        if (m.secret !== this.#secretId) {
          this.#secretMismatch(m.hub);
          break;
        }
        this.#lastBeat = m.at;
        // The proof's own time (when the hub's XREAD was sent, host clock) turned into this
        // process's performance.now() time base: never the time this message arrived (I3).
        this.#h.onCaughtUp(performance.now() - Math.max(0, hostNow() - m.at));
        if (this.#opened && hostNow() - m.at <= this.#o.maxStaleMs) {
          this.#opened.resolve(false);
          this.#opened = undefined;
        }
        break;
      }
      case 'entries': {
        const own = this.#o.origin();
        for (const e of m.entries) {
          if (e.origin === own) continue;
          try {
            this.#h.onEntry(e);
          } catch (err) {
            this.#h.onError(err);
          }
        }
        break;
      }
      case 'gap': this.#h.onGap(m.cause, `relay hub: ${m.detail}`); break;
      case 'bad': this.#h.onBadEntry(m.reason, m.id, m.message); break;
      case 'status':
        if (m.status === 'closed') {
          // The hub is gone: this client holds no proof any more (and says hello at once, to
          // find a restarted hub); the cache stops serving on this very call (I3).
          this.#closedHub = m.hub;
          this.#lastBeat = Number.NEGATIVE_INFINITY;
        }
        this.#h.onStatus(m.status, m.previous);
        break;
    }
  }

  /**
   * A hub verifying with another secret (or none where we have one): its beats prove nothing
   * (so the cache serves no longer than maxStaleMs after its last proof from a matching hub;
   * it cleared when the hub changed). Reported once per hub.
   */
  #secretMismatch(hub: string): void {
    this.#lastBeat = Number.NEGATIVE_INFINITY;
    if (this.#mismatchHub === hub) return;
    this.#mismatchHub = hub;
    const err = new RelayError('E_RELAY_REFUSED', this.#secretId === undefined
      ? "the relay hub verifies signed entries (its options.secret is set) but this cache has no options.secret: give the cache the hub's secret, or set options.relay to false"
      : "this cache's options.secret does not match the relay hub's: pass the same secret to startRelayHub() and createCache(), or set options.relay to false");
    if (this.#opened) this.#opened.reject(err);
    else this.#h.onError(err);
  }

  /** One hub, contiguous numbers: anything else means messages may be missing (I2). */
  #sequence(m: StreamMessage): void {
    if (m.hub !== this.#hub) {
      const before = this.#hub;
      this.#hub = m.hub;
      this.#seq = m.seq;
      if (before !== undefined) this.#h.onGap('restart', `the relay hub changed from ${before} to ${m.hub}`);
      return;
    }
    if (m.seq !== this.#seq + 1) this.#h.onGap('missing', `relay messages ${this.#seq + 1}..${m.seq - 1} were not received`);
    this.#seq = m.seq;
  }

  #subscribe(): void {
    if (this.mode === 'ipc') {
      let set = ipcClients.get(this.#topic);
      if (set === undefined) ipcClients.set(this.#topic, (set = new Set()));
      if (ipcClients.size === 1 && set.size === 0) process.on('message', onIpcMessage);
      set.add(this);
    } else {
      this.#channel = new BroadcastChannel(topicChannel(this.#topic));
      this.#channel.unref();
      this.#channel.onmessage = (ev) => {
        const m = (ev as MessageEvent).data as unknown;
        if (isRelayMessage(m)) this.receive(m);
      };
      this.#helloChannel = new BroadcastChannel(HELLO_CHANNEL);
      this.#helloChannel.unref();
      this.#helloChannel.onmessage = () => undefined; // other caches' hellos: drained, not kept
    }
    this.#post('hello');
    // Say hello again while beats do not come (hub restarted, or not started yet).
    const every = Math.max(20, Math.min(1000, Math.floor(this.#o.maxStaleMs / 4)));
    this.#timer = setInterval(() => {
      if (hostNow() - this.#lastBeat > this.#o.maxStaleMs / 2) this.#post('hello');
    }, every);
    this.#timer.unref();
  }

  #post(type: 'hello' | 'bye'): void {
    const m: HelloMessage = {
      t: RELAY_TAG, topic: this.#topic, type, v: RELAY_VERSION, client: this.#id, maxStaleMs: this.#o.maxStaleMs,
      auto: this.#o.auto && this.#opened !== undefined, // an open cache stays relayed: it asks for no advice
      ...(this.#secretId === undefined ? {} : { secret: this.#secretId }),
    };
    try {
      if (this.mode === 'ipc') {
        if (process.connected) process.send?.(m, undefined, undefined, (err: Error | null) => { if (err) this.#h.onError(err); });
      } else {
        this.#helloChannel?.postMessage(m);
      }
    } catch (err) {
      this.#h.onError(err);
    }
  }
}
