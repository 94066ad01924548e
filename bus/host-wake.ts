import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { hostname } from 'node:os';
import type { RedisClient } from './connection.js';
import { LUA_NOW, Script } from './script.js';
import { decodeHint, encodeHint, kMaxDatagramBytes, kSigChars } from './host-hint.js';
import type { Invalidation } from './wire.js';
import { deliverHint, type WakeHandlers, type WakeStats } from './wake.js';

/** Each cache re-registers (and re-reads the peer list) this often (ms). */
export const kPeerBeatMs = 1000;
/** A peer that has not re-registered for this long (Redis time, ms) is dropped from the registry. */
export const kPeerTtlMs = 5000;
/**
 * How long `start()` waits for its probe to come back through the broadcast address (ms). A
 * host whose loopback does not deliver broadcasts (it has no `127.255.255.255` route) fails the
 * probe, and the cache then takes one datagram per peer on its own port.
 */
export const kProbeWaitMs = 250;
const kLoopback = '127.0.0.1';
/**
 * The broadcast address of the loopback network 127.0.0.0/8: one datagram sent to it reaches
 * every socket bound to it on that port (each bound with SO_REUSEADDR), in one `sendmsg`.
 */
export const kBroadcast = '127.255.255.255';
/** A probe's first byte ('?'): never a hint's ('[' unsigned, a hex digit signed). */
const kProbeByte = 0x3f;
/** How close() waits for Redis to take this cache off the registry (ms). */
const kLeaveWaitMs = 500;

/** Counters of the same-host wake-up, and how this cache listens (plain values). */
export interface HostWakeStats extends WakeStats {
  /** Datagrams sent (one per entry and peer). */
  sent: number;
  /** Peers on this host that the last registry read listed (this cache excluded). */
  peers: number;
  /**
   * How this cache takes its peers' datagrams: on the host's shared broadcast port (one
   * datagram per publish reaches every peer), on its own port (one per peer: the host's
   * loopback failed the broadcast probe, or option `hostFanout: 'unicast'`), or not at all (it
   * only publishes).
   */
  listen: 'broadcast' | 'unicast' | 'none';
}

export interface HostWakeOptions {
  /** The namespace's peer registry, a sorted set (busKeys().base + ':peers'). */
  readonly registry: string;
  /** The broadcast port the namespace's caches on this host share (hostPortKey()). */
  readonly portKey: string;
  /** `'broadcast'`: listen on the host's shared broadcast port when the host proves it delivers; `'unicast'`: on an own port. */
  readonly fanout: 'broadcast' | 'unicast';
  /** Carried in every datagram: a datagram of another namespace (a reused port) is ignored. */
  readonly tag: string;
  readonly origin: string;
  readonly secret?: string | Buffer | undefined;
  /** Listen for peers' datagrams (false: a cache that only publishes, such as one whose host relay reads). */
  readonly receive: boolean;
}

/**
 * The peer registry: registers this cache (`<port>|<origin>` when it listens on its own port,
 * `b<port>|<origin>` on the host's broadcast port; scored with Redis's clock, so that hosts
 * with skewed clocks do not expire each other), drops peers that stopped beating, keeps the
 * host's broadcast port alive while a cache listens on it, and returns the live members.
 */
const peersScript = new Script('host-peers', 2, String.raw`--[[
  host-peers: register (ARGV[1], unless '') and list the live peers.
  Input:
    KEYS[1] the peer registry (sorted set; member "[b]<port>|<origin>", score: last beat, Redis ms)
    KEYS[2] this host's broadcast port (string)
    ARGV[1] this cache's member, or '' (a cache that only sends)
    ARGV[2] ttl, ms
    ARGV[3] the broadcast port this cache listens on, or ''
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
if ARGV[3] ~= '' then
  local cur = redis.call('GET', KEYS[2])
  if not cur then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl * 2)
  elseif cur == ARGV[3] then
    redis.call('PEXPIRE', KEYS[2], ttl * 2)
  end
end
return redis.call('ZRANGE', KEYS[1], 0, -1)`);

/**
 * The host's broadcast port: the one already agreed, or ARGV[1] (the port the calling cache
 * just bound) when there is none.
 */
const claimScript = new Script('host-port', 1, String.raw`--[[
  host-port: the broadcast port of this host's caches of the namespace.
  Input:
    KEYS[1] this host's broadcast port (string)
    ARGV[1] the port the caller bound, taken when none is set
    ARGV[2] ttl, ms
  Output:
    the port to listen on
]]
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]) * 2)
return ARGV[1]`);

/**
 * A UDP socket for the 127.0.0.1 literal: its lookup answers synchronously, so that a datagram
 * leaves within `send()`, before the publish script is written to Redis (dgram's default lookup
 * defers each send to the next tick). Every address it is given must be an IPv4 literal.
 */
export function loopbackSocket(): Socket {
  return createSocket({ type: 'udp4', lookup: (address, _family, cb) => { (cb as (e: null, a: string, f: number) => void)(null, address, 4); } });
}

/** Binds `socket` to `address:port`; rejects on an error (EADDRINUSE, no such address). */
function bind(socket: Socket, port: number, address: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, address, () => { socket.off('error', reject); resolve(); });
  });
}

/** Closes a socket that may be closed already (close() while start() was binding or probing). */
function closeQuietly(socket: Socket): void {
  try {
    socket.close();
  } catch {
    // ERR_SOCKET_DGRAM_NOT_RUNNING: closed already
  }
}

/**
 * Option `wake: 'host'` (docs/wake-up.md): workers on one host tell each other of an
 * invalidation directly, over loopback UDP, within the `invalidate()` call (bus/publisher.ts),
 * before the publish script goes to Redis. A datagram is one hop where Redis pub/sub is two
 * (publisher → Redis → subscriber), so the keys drop in a same-host peer before Redis has even
 * answered the publisher.
 *
 * **One datagram reaches every peer.** The caches of a namespace on a host all listen on one
 * port of the loopback broadcast address `127.255.255.255` (SO_REUSEADDR), agreed through Redis
 * (the first to start claims the port it bound); a publish is one `sendmsg` whatever the number
 * of peers, and the kernel hands a copy to each (issue 15: the per-peer sends were the
 * publisher's largest cost). A cache proves its host delivers broadcasts before it relies on
 * them: it sends itself a probe through the address, and when the probe does not come back
 * (a loopback without that route) it listens on its own `127.0.0.1` port, and peers send to it
 * one datagram each, as they do to a cache of option `hostFanout: 'unicast'`.
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
 * skipped (their 127.0.0.1 is not ours). Nothing is sent beyond 127.0.0.0/8.
 */
export class HostWake {
  /** Where the probe is sent: the broadcast address (a test points it at one that does not deliver to the port). */
  static probeAddress = kBroadcast;
  readonly stats: HostWakeStats = { hints: 0, ignored: 0, sent: 0, peers: 0, listen: 'none' };
  readonly #client: RedisClient;
  readonly #opts: HostWakeOptions;
  readonly #h: WakeHandlers;
  /** Sends, and (listening on its own port) receives. */
  readonly #socket: Socket;
  /** Receives on the host's broadcast port (listening by broadcast). */
  #bsocket: Socket | undefined;
  readonly #host = `${hostname()}:`;
  /** The broadcast port this cache listens on, or '' (the registry script's ARGV[3]). */
  #bport = '';
  /** Where a publish goes: peers' own ports on 127.0.0.1, and the distinct broadcast ports they listen on. */
  #ports: number[] = [];
  #bports: number[] = [];
  #member = '';
  #probe: { readonly body: Buffer; readonly arrived: () => void } | undefined;
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

  /**
   * Binds 127.0.0.1 (an ephemeral port); when it listens by broadcast, joins the host's
   * broadcast port and proves it delivers; registers, reads the peers, and keeps beating.
   */
  async start(): Promise<void> {
    await bind(this.#socket, 0, kLoopback);
    if (this.#closed) return;
    this.#socket.setBroadcast(true);
    if (this.#opts.receive && this.#opts.fanout === 'broadcast') await this.#joinBroadcast();
    if (this.#closed) return;
    if (this.#opts.receive) {
      this.#member = this.#bport !== '' ? `b${this.#bport}|${this.#opts.origin}` : `${this.#socket.address().port}|${this.#opts.origin}`;
      this.stats.listen = this.#bport !== '' ? 'broadcast' : 'unicast';
    }
    await this.#beat();
    if (this.#closed) return; // closed while opening (Bus.open timed out): no beats
    this.#timer = setInterval(() => { this.#beat().catch((err: unknown) => { if (!this.#closed) this.#h.onError(err); }); }, kPeerBeatMs);
    this.#timer.unref();
  }

  /** Sends one invalidation to every peer on this host: one datagram per broadcast port, one per peer on its own port. Never throws. */
  send(inv: Invalidation): void {
    const ports = this.#ports, bports = this.#bports;
    if (this.#closed || ports.length + bports.length === 0) return;
    try {
      const msg = encodeHint(inv, this.#opts.tag, this.#opts.origin, this.#opts.secret);
      if (msg.length > kMaxDatagramBytes + kSigChars) return;
      for (const port of bports) {
        this.#socket.send(msg, port, kBroadcast);
        this.stats.sent++;
      }
      for (const port of ports) {
        this.#socket.send(msg, port, kLoopback);
        this.stats.sent++;
      }
    } catch (err) {
      this.#h.onError(err); // a hint lost: the stream still carries the entry, and the publish goes on
    }
  }

  /**
   * Stops beating, closes the sockets, leaves the registry. Waits at most `kLeaveWaitMs` for Redis
   * (close must return during an outage or a silent partition: the member then expires).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#probe?.arrived();
    closeQuietly(this.#socket);
    if (this.#bsocket !== undefined) closeQuietly(this.#bsocket);
    if (this.#member === '') return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#client.zrem(this.#opts.registry, this.#member).catch(() => undefined),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, kLeaveWaitMs); }),
    ]);
    clearTimeout(timer);
  }

  /**
   * Listens on the host's broadcast port: binds one (ephemeral), takes the one already agreed
   * in Redis instead when there is one, then sends itself a probe through the broadcast address.
   * Leaves `#bport` empty (listen on the own port) when the port cannot be bound or the probe
   * does not come back within `kProbeWaitMs`.
   */
  async #joinBroadcast(): Promise<void> {
    const bound = (socket: Socket, port: number): Promise<boolean> => bind(socket, port, kBroadcast).then(() => true, () => false);
    // An ephemeral port no socket holds: a socket without SO_REUSEADDR finds one (with it, the
    // kernel may hand out a port that another namespace's caches share, whose datagrams would
    // then come here too, to be ignored).
    const finder = createSocket('udp4');
    const free = (await bound(finder, 0)) ? finder.address().port : 0;
    closeQuietly(finder);
    let b = this.#broadcastSocket();
    if (free === 0 || !(await bound(b, free))) { // no broadcast address on this host: listen on the own port
      closeQuietly(b);
      return;
    }
    const mine = b.address().port;
    let agreed: number;
    try {
      agreed = Number(await claimScript.run<string>(this.#client, [this.#opts.portKey], [mine, kPeerTtlMs]));
    } catch (err) {
      closeQuietly(b);
      throw err; // Redis failed: start() fails, as its first beat would
    }
    if (agreed !== mine && Number.isInteger(agreed) && agreed > 0 && agreed < 65536) {
      const other = this.#broadcastSocket();
      // A port another program took since its holders left: keep ours, and publishers send to both.
      if (await bound(other, agreed)) {
        closeQuietly(b);
        b = other;
      } else {
        closeQuietly(other);
      }
    }
    if (this.#closed) {
      closeQuietly(b);
      return;
    }
    this.#bsocket = b;
    if (await this.#probeArrives(b.address().port)) {
      this.#bport = String(b.address().port);
    } else { // the host's loopback does not deliver broadcasts: listen on the own port
      closeQuietly(b);
      this.#bsocket = undefined;
    }
  }

  #broadcastSocket(): Socket {
    const b = createSocket({ type: 'udp4', reuseAddr: true });
    b.on('error', (err: unknown) => { if (!this.#closed && this.#bsocket === b) this.#h.onError(err); });
    b.on('message', (msg: Buffer) => this.#onMessage(msg));
    return b;
  }

  /** Sends `?<random>` to the broadcast address's `port`; true when it arrives within `kProbeWaitMs`. */
  async #probeArrives(port: number): Promise<boolean> {
    const body = Buffer.concat([Buffer.of(kProbeByte), randomBytes(12)]);
    let timer: NodeJS.Timeout | undefined;
    const arrived = await new Promise<boolean>((resolve) => {
      this.#probe = { body, arrived: () => resolve(true) };
      timer = setTimeout(() => resolve(false), kProbeWaitMs);
      this.#socket.send(body, port, HostWake.probeAddress, (err) => { if (err) resolve(false); });
    });
    clearTimeout(timer);
    this.#probe = undefined;
    return arrived && !this.#closed;
  }

  async #beat(): Promise<void> {
    const members = await peersScript.run<string[]>(this.#client, [this.#opts.registry, this.#opts.portKey], [this.#member, kPeerTtlMs, this.#bport]);
    const ports: number[] = [];
    const bports = new Set<number>();
    let peers = 0;
    for (const m of members) {
      const bar = m.indexOf('|');
      const origin = m.slice(bar + 1);
      if (origin === this.#opts.origin || !origin.startsWith(this.#host)) continue;
      const broadcast = m.charCodeAt(0) === 0x62; // 'b'
      const port = Number(m.slice(broadcast ? 1 : 0, bar));
      if (!Number.isInteger(port) || port <= 0 || port >= 65536) continue;
      peers++;
      if (broadcast) bports.add(port);
      else ports.push(port);
    }
    this.#ports = ports;
    this.#bports = [...bports];
    this.stats.peers = peers;
  }

  #onMessage(msg: Buffer): void {
    if (this.#closed) return;
    if (msg[0] === kProbeByte) { // a probe: this cache's own, or another's joining the port
      const probe = this.#probe;
      if (probe !== undefined && msg.equals(probe.body)) probe.arrived();
      return;
    }
    const { tag, origin, secret } = this.#opts;
    deliverHint(this.stats, this.#h, origin, () => decodeHint(msg, tag, secret));
  }
}
