import { timingSafeEqual } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
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
/** How long close() waits for Redis to take this cache off the registry (ms). */
const kLeaveWaitMs = 500;

/** Counters of the same-host wake-up (plain numbers). */
export interface HostWakeStats extends WakeStats {
  /** Datagrams sent (one per entry and peer). */
  sent: number;
  /** Peers on this host that the last registry read listed (this cache excluded). */
  peers: number;
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
 * `["h1", tag, origin, keys, tags, clear]`, preceded, when a secret is set, by the 64 hex
 * characters of its HMAC-SHA256. Not an entry's fields: a hint goes out as the call is made,
 * before the entry is encoded, and the receiver parses one JSON text (issue 15: each step before
 * the first `sendmsg` costs several times more in a process that was idle).
 */
export function encodeHint(inv: Invalidation, tag: string, origin: string, secret: string | Buffer | undefined): Buffer {
  const body = JSON.stringify([kHintVersion, tag, origin, inv.keys, inv.tags, inv.clear ? 1 : 0]);
  return Buffer.from(secret === undefined ? body : sign(secret, body) + body);
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
  if (msg.length > kMaxDatagramBytes + kSigChars) throw new Error('oversized');
  const signed = msg[0] !== 0x5b; // '[': the body, unsigned
  const body = msg.toString('utf8', signed ? kSigChars : 0);
  if (secret !== undefined) {
    if (!signed || msg.length < kSigChars) throw new Error('unsigned');
    if (!timingSafeEqual(msg.subarray(0, kSigChars), Buffer.from(sign(secret, body)))) throw new Error('wrongly signed');
  }
  const m: unknown = JSON.parse(body);
  if (!Array.isArray(m) || m.length !== 6 || m[0] !== kHintVersion || m[1] !== tag) throw new Error('not a hint of this namespace');
  const origin: unknown = m[2], keys: unknown = m[3], tags: unknown = m[4], clear: unknown = m[5];
  if (typeof origin !== 'string' || !Array.isArray(keys) || !Array.isArray(tags) || !allStrings(keys) || !allStrings(tags) || (clear !== 0 && clear !== 1)) {
    throw new Error('malformed');
  }
  if (keys.length === 0 && tags.length === 0 && clear === 0) throw new Error('empty');
  return { id: ZERO_ID, origin, time: 0, keys: keys as string[], tags: tags as string[], clear: clear === 1 }; // a datagram names no stream ID
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
 */
export class HostWake {
  readonly stats: HostWakeStats = { hints: 0, ignored: 0, sent: 0, peers: 0 };
  readonly #client: RedisClient;
  readonly #opts: HostWakeOptions;
  readonly #h: WakeHandlers;
  readonly #socket: Socket;
  readonly #host = `${hostname()}:`;
  #ports: number[] = [];
  #member = '';
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(client: RedisClient, opts: HostWakeOptions, handlers: WakeHandlers) {
    this.#client = client;
    this.#opts = opts;
    this.#h = handlers;
    this.#socket = loopbackSocket();
    this.#socket.on('error', (err: unknown) => { if (!this.#closed) this.#h.onError(err); });
    if (opts.receive) this.#socket.on('message', (msg: Buffer) => this.#onMessage(msg));
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

  /** Sends one invalidation to every peer on this host. Never throws. */
  send(inv: Invalidation): void {
    const ports = this.#ports;
    if (this.#closed || ports.length === 0) return;
    try {
      const msg = encodeHint(inv, this.#opts.tag, this.#opts.origin, this.#opts.secret);
      if (msg.length > kMaxDatagramBytes + kSigChars) return;
      for (const port of ports) {
        this.#socket.send(msg, port, kLoopback);
        this.stats.sent++;
      }
    } catch (err) {
      this.#h.onError(err); // a hint lost: the stream still carries the entry, and the publish goes on
    }
  }

  /**
   * Stops beating, closes the socket, leaves the registry. Waits at most `kLeaveWaitMs` for Redis
   * (close must return during an outage or a silent partition: the member then expires).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
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

  #onMessage(msg: Buffer): void {
    if (this.#closed) return;
    const { tag, origin, secret } = this.#opts;
    deliverHint(this.stats, this.#h, origin, () => decodeHint(msg, tag, secret));
  }
}
