import { timingSafeEqual } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { hostname } from 'node:os';
import type { RedisClient } from './connection.js';
import { LUA_NOW, Script } from './script.js';
import { ZERO_ID } from './stream-id.js';
import { sign, type DecodedEntry, type Invalidation } from './wire.js';
import { deliverHint, type WakeHandlers, type WakeStats } from './wake.js';

/** Each cache re-registers (and re-reads the peer list) this often (ms). */
export const kPeerBeatMs = 1000;
/** A peer that has not re-registered for this long (Redis time, ms) is dropped from the registry. */
export const kPeerTtlMs = 5000;
/** The largest datagram sent or taken; an invalidation whose datagram would be larger comes with the stream only. */
export const kMaxDatagramBytes = 60_000;
/** The datagram format's version (docs/wire-format.md, "Hints beside the stream"). */
const kHintVersion = 'h1';
/** Hex characters of an HMAC-SHA256 signature. */
const kSigChars = 64;
const kLoopback = '127.0.0.1';
/**
 * Option `wake: 'host-first'`: the longest the publisher waits for its same-host peers to
 * acknowledge a datagram before it writes the stream entry anyway (ms). A peer that is frozen,
 * gone or of an older version (it ignores a hint that asks for an acknowledgement) costs this.
 */
export const kAckWaitMs = 1;
/** The first byte of an acknowledgement datagram ('A'; a hint starts with '[' or a lowercase hex signature). */
const kAckByte = 0x41;
/** How long close() waits for Redis to take this cache off the registry (ms). */
const kLeaveWaitMs = 500;

/** Counters of the same-host wake-up (plain numbers). */
export interface HostWakeStats extends WakeStats {
  /** Datagrams sent (one per entry and peer). */
  sent: number;
  /** Peers on this host that the last registry read listed (this cache excluded). */
  peers: number;
  /** Option `wake: 'host-first'`: acknowledgements received from peers. */
  acks: number;
  /** Option `wake: 'host-first'`: stream writes that went ahead after `kAckWaitMs` without every peer's acknowledgement. */
  unacked: number;
}

export interface HostWakeOptions {
  /** The namespace's peer registry, a sorted set (busKeys().base + ':peers'). */
  readonly registry: string;
  /** Carried in every datagram: a datagram of another namespace (a reused port) is ignored. */
  readonly tag: string;
  readonly origin: string;
  readonly secret?: string | Buffer | undefined;
  /** Listen for peers' datagrams (false: a cache that only publishes, such as one whose host relay reads). */
  readonly receive: boolean;
  /**
   * Option `wake: 'host-first'`: each datagram asks its peers to acknowledge it, and `send()`
   * returns a promise that resolves once every peer has, or after `ackWaitMs`.
   */
  readonly awaitPeers?: boolean | undefined;
  /** @defaultValue `kAckWaitMs` (tests set it longer, to hold the write until they acknowledge). */
  readonly ackWaitMs?: number | undefined;
}

/**
 * The peer registry: registers this cache (`<port>|<origin>`, scored with Redis's clock, so
 * that hosts with skewed clocks do not expire each other), drops peers that stopped beating,
 * and returns the live members.
 */
const peersScript = new Script('host-peers', 1, String.raw`--[[
  host-peers: register (ARGV[1], unless '') and list the live peers.
  Input:
    KEYS[1] the peer registry (sorted set; member "<port>|<origin>", score: last beat, Redis ms)
    ARGV[1] this cache's member, or '' (a cache that only sends)
    ARGV[2] ttl, ms
  Output:
    the members that beat within ttl
]]
${LUA_NOW}
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
end
return redis.call('ZRANGE', KEYS[1], 0, -1)`);

/**
 * A UDP socket for the 127.0.0.1 literal: its lookup answers synchronously, so that a datagram
 * leaves within `send()`, before the publish script is written to Redis (dgram's default lookup
 * defers each send to the next tick). Every address it is given must be an IPv4 literal.
 */
export function loopbackSocket(): Socket {
  return createSocket({ type: 'udp4', lookup: (address, _family, cb) => { (cb as (e: null, a: string, f: number) => void)(null, address, 4); } });
}

/**
 * One invalidation as a datagram (docs/wire-format.md): the JSON text
 * `["h1", tag, origin, keys, tags, clear]`, or with a seventh element `seq` (a non-negative
 * integer) when the sender asks for an acknowledgement (option `wake: 'host-first'`), preceded,
 * when a secret is set, by the 64 hex characters of its HMAC-SHA256. Not an entry's fields: a
 * hint goes out as the call is made, before the entry is encoded, and the receiver parses one
 * JSON text (issue 15: each step before the first `sendmsg` costs several times more in a
 * process that was idle).
 */
export function encodeHint(inv: Invalidation, tag: string, origin: string, secret: string | Buffer | undefined, seq?: number): Buffer {
  const fields: unknown[] = [kHintVersion, tag, origin, inv.keys, inv.tags, inv.clear ? 1 : 0];
  if (seq !== undefined) fields.push(seq);
  const body = JSON.stringify(fields);
  return Buffer.from(secret === undefined ? body : sign(secret, body) + body);
}

/** The acknowledgement of hint `seq` (option `wake: 'host-first'`): `A<seq>`, ASCII. */
export function encodeAck(seq: number): Buffer {
  return Buffer.from(`A${seq}`, 'latin1');
}

function allStrings(list: unknown[]): boolean {
  for (let i = 0; i < list.length; i++) if (typeof list[i] !== 'string') return false;
  return true;
}

/**
 * Decodes a datagram of `encodeHint`; throws when it is not a valid hint of namespace `tag`
 * (malformed, another version or namespace, unsigned or wrongly signed when `secret` is set).
 * A signed datagram is taken without a secret, as a signed entry is. Plain loops and one
 * `JSON.parse`: this runs in a process the datagram just woke.
 */
export function decodeHint(msg: Buffer, tag: string, secret: string | Buffer | undefined): DecodedEntry {
  return parseHint(msg, tag, secret).entry;
}

/** `decodeHint`, and the sequence number of a hint that asks to be acknowledged. */
function parseHint(msg: Buffer, tag: string, secret: string | Buffer | undefined): { entry: DecodedEntry; seq: number | undefined } {
  if (msg.length > kMaxDatagramBytes + kSigChars) throw new Error('oversized');
  const signed = msg[0] !== 0x5b; // '[': the body, unsigned
  const body = msg.toString('utf8', signed ? kSigChars : 0);
  if (secret !== undefined) {
    if (!signed || msg.length < kSigChars) throw new Error('unsigned');
    if (!timingSafeEqual(msg.subarray(0, kSigChars), Buffer.from(sign(secret, body)))) throw new Error('wrongly signed');
  }
  const m: unknown = JSON.parse(body);
  if (!Array.isArray(m) || (m.length !== 6 && m.length !== 7) || m[0] !== kHintVersion || m[1] !== tag) throw new Error('not a hint of this namespace');
  const seq: unknown = m[6];
  if (seq !== undefined && !(Number.isSafeInteger(seq) && (seq as number) >= 0)) throw new Error('malformed');
  const origin: unknown = m[2], keys: unknown = m[3], tags: unknown = m[4], clear: unknown = m[5];
  if (typeof origin !== 'string' || !Array.isArray(keys) || !Array.isArray(tags) || !allStrings(keys) || !allStrings(tags) || (clear !== 0 && clear !== 1)) {
    throw new Error('malformed');
  }
  if (keys.length === 0 && tags.length === 0 && clear === 0) throw new Error('empty');
  // A datagram names no stream ID.
  return { entry: { id: ZERO_ID, origin, time: 0, keys: keys as string[], tags: tags as string[], clear: clear === 1 }, seq: seq as number | undefined };
}

/**
 * Option `wake: 'host'` (docs/wake-up.md): workers on one host tell each other of an
 * invalidation directly, one loopback UDP datagram per peer, sent within the `invalidate()`
 * call (bus/publisher.ts), before the publish script goes to Redis. A datagram is one hop where Redis pub/sub is two (publisher → Redis → subscriber),
 * so the keys drop in a same-host peer before Redis has even answered the publisher.
 *
 * **The stream stays the source of truth**, as with `'pubsub'` hints (bus/wake.ts): a
 * datagram is only an extra, early drop; every entry is still read, chain-checked and applied
 * from the stream. A lost datagram (a peer that joined less than a beat ago, a full socket
 * buffer, a peer on another host) only means the drop comes with the stream. Datagrams are
 * checked as entries are (size bound, version, HMAC when `secret` is set; `decodeHint`): a
 * forged one is ignored, and the worst a valid-looking one can do is drop keys.
 *
 * Peers find each other through a registry in Redis (one sorted set per namespace): each cache
 * re-registers every second and reads the list back; peers whose origin names another host are
 * skipped (their 127.0.0.1 is not ours). Nothing is sent beyond 127.0.0.1.
 *
 * Option `wake: 'host-first'` (`awaitPeers`): each datagram asks its peers to acknowledge it,
 * and `send()` returns a promise the publisher waits for before it writes the stream entry:
 * resolved once every peer has acknowledged, or after `kAckWaitMs`. Every receiver acknowledges
 * a valid hint that asks, once it has handed it over (the keys are dropped). An acknowledgement
 * only ever lets the write go sooner, so a forged one can do no more than `'host'` does.
 */
export class HostWake {
  readonly stats: HostWakeStats = { hints: 0, ignored: 0, sent: 0, peers: 0, acks: 0, unacked: 0 };
  readonly #client: RedisClient;
  readonly #opts: HostWakeOptions;
  readonly #h: WakeHandlers;
  readonly #socket: Socket;
  readonly #host = `${hostname()}:`;
  #ports: number[] = [];
  #member = '';
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Option `awaitPeers`: the last hint's sequence number, and the hints waiting for acknowledgements. */
  #seq = 0;
  readonly #waits = new Map<number, { left: number; done: () => void }>();

  constructor(client: RedisClient, opts: HostWakeOptions, handlers: WakeHandlers) {
    this.#client = client;
    this.#opts = opts;
    this.#h = handlers;
    this.#socket = loopbackSocket();
    this.#socket.on('error', (err: unknown) => { if (!this.#closed) this.#h.onError(err); });
    if (opts.receive || opts.awaitPeers) this.#socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.#onMessage(msg, rinfo));
  }

  /** Binds 127.0.0.1 (an ephemeral port), registers, reads the peers, and keeps beating. */
  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#socket.once('error', reject);
      this.#socket.bind(0, kLoopback, () => { this.#socket.off('error', reject); resolve(); });
    });
    if (this.#closed) return;
    if (this.#opts.receive) this.#member = `${this.#socket.address().port}|${this.#opts.origin}`;
    await this.#beat();
    if (this.#closed) return; // closed while opening (Bus.open timed out): no beats
    this.#timer = setInterval(() => { this.#beat().catch((err: unknown) => { if (!this.#closed) this.#h.onError(err); }); }, kPeerBeatMs);
    this.#timer.unref();
  }

  /**
   * Sends one invalidation to every peer on this host. Never throws. With `awaitPeers`, returns
   * a promise that resolves once every peer acknowledged it, or after `ackWaitMs` (never rejects);
   * otherwise, or when nothing was sent, undefined. `ask` false: no acknowledgement asked for
   * (a write-behind write's hint, sent once its script has written the stream entry).
   */
  send(inv: Invalidation, ask = true): Promise<void> | undefined {
    const ports = this.#ports;
    if (this.#closed || ports.length === 0) return undefined;
    const seq = ask && this.#opts.awaitPeers ? ++this.#seq : undefined;
    try {
      const msg = encodeHint(inv, this.#opts.tag, this.#opts.origin, this.#opts.secret, seq);
      if (msg.length > kMaxDatagramBytes + kSigChars) return undefined;
      for (const port of ports) {
        this.#socket.send(msg, port, kLoopback);
        this.stats.sent++;
      }
    } catch (err) {
      this.#h.onError(err); // a hint lost: the stream still carries the entry, and the publish goes on
      return undefined;
    }
    return seq === undefined ? undefined : this.#awaitAcks(seq, ports.length);
  }

  /**
   * Stops beating, closes the socket, leaves the registry. Waits at most `kLeaveWaitMs` for Redis
   * (close must return during an outage or a silent partition: the member then expires).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const w of [...this.#waits.values()]) w.done();
    this.#socket.close();
    if (this.#member === '') return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#client.zrem(this.#opts.registry, this.#member).catch(() => undefined),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, kLeaveWaitMs); }),
    ]);
    clearTimeout(timer);
  }

  async #beat(): Promise<void> {
    const members = await peersScript.run<string[]>(this.#client, [this.#opts.registry], [this.#member, kPeerTtlMs]);
    const ports: number[] = [];
    for (const m of members) {
      const bar = m.indexOf('|');
      const origin = m.slice(bar + 1);
      const port = Number(m.slice(0, bar));
      if (origin !== this.#opts.origin && origin.startsWith(this.#host) && Number.isInteger(port) && port > 0 && port < 65536) ports.push(port);
    }
    this.#ports = ports;
    this.stats.peers = ports.length;
  }

  #awaitAcks(seq: number, peers: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.stats.unacked++;
        done();
      }, this.#opts.ackWaitMs ?? kAckWaitMs);
      const done = (): void => {
        clearTimeout(timer);
        this.#waits.delete(seq);
        resolve();
      };
      this.#waits.set(seq, { left: peers, done });
    });
  }

  #onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#closed) return;
    if (msg[0] === kAckByte) {
      this.#onAck(msg);
      return;
    }
    if (!this.#opts.receive) return;
    const { tag, origin, secret } = this.#opts;
    let seq: number | undefined;
    deliverHint(this.stats, this.#h, origin, () => {
      const h = parseHint(msg, tag, secret);
      seq = h.seq;
      return h.entry;
    });
    // Handed over (the keys dropped): acknowledged, to its sender on this host only.
    if (seq !== undefined && rinfo.address === kLoopback) {
      try {
        this.#socket.send(encodeAck(seq), rinfo.port, kLoopback);
      } catch (err) {
        this.#h.onError(err); // the sender writes the stream entry after kAckWaitMs anyway
      }
    }
  }

  #onAck(msg: Buffer): void {
    if (msg.length > 17) return; // 'A' and at most 16 digits
    const seq = Number(msg.toString('latin1', 1));
    if (!Number.isSafeInteger(seq)) return;
    this.stats.acks++;
    const w = this.#waits.get(seq);
    if (w !== undefined && --w.left <= 0) w.done();
  }
}
