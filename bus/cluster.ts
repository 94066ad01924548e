import { Cluster, type ClusterOptions, type RedisOptions } from 'ioredis';
import { InvalidOptionError } from './errors.js';

/**
 * Redis Cluster specifics. Every key of a namespace carries the hash tag `{<namespace>}`
 * (bus/keys.ts), so a namespace lives in one slot on one master and different namespaces
 * spread over the masters. The reader uses the slot owner's identity to notice a failover:
 * a promoted replica may lack the newest entries, which no count can prove (see reader.ts).
 */

// CRC16-CCITT (XMODEM), the hash Redis Cluster uses for key slots.
const TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

function crc16(buf: Buffer): number {
  let crc = 0;
  for (const b of buf) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ b) & 0xff]!;
  return crc;
}

/** The cluster slot of a key (0..16383), honouring `{hash tags}` as Redis does. */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  return crc16(Buffer.from(key)) & 16383;
}

/**
 * Builds a Cluster client from seed URLs (`redis://[user:pass@]host:port`, `rediss://` for TLS).
 * Credentials and TLS of the first URL apply to every node; `common` (connection name, retry)
 * goes to every node connection.
 */
export function clusterFromSeeds(seeds: readonly string[], common: RedisOptions, extra: Partial<ClusterOptions> = {}): Cluster {
  if (seeds.length === 0) throw new InvalidOptionError('options.redis must list at least one cluster seed node');
  const nodes = seeds.map((s) => {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      throw new InvalidOptionError(`options.redis: cluster seed ${JSON.stringify(s)} is not a redis:// URL`);
    }
    if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
      throw new InvalidOptionError(`options.redis: cluster seed ${JSON.stringify(u.protocol)} must be redis:// or rediss://`);
    }
    return { url: u, host: u.hostname, port: Number(u.port || 6379) };
  });
  const first = nodes[0]!.url;
  const auth: RedisOptions = {};
  if (first.username) auth.username = decodeURIComponent(first.username);
  if (first.password) auth.password = decodeURIComponent(first.password);
  if (first.protocol === 'rediss:') auth.tls = {};
  return new Cluster(nodes.map(({ host, port }) => ({ host, port })), {
    redisOptions: { ...common, ...auth },
    slotsRefreshTimeout: 5000, // ioredis' 1 s fails start-up on a busy host
    clusterRetryStrategy: common.retryStrategy ?? undefined,
    ...extra,
  });
}

/** `host:port` of the master ioredis currently routes `key` to, or undefined before the slot map is known. */
export function slotOwner(cluster: Cluster, key: string): string | undefined {
  return cluster.slots[keySlot(key)]?.[0];
}

/**
 * The identity of the master serving `key`: its `host:port` and its run_id (a restarted or
 * replaced node has a new one). Undefined when the node is not reachable right now.
 */
export async function slotOwnerIdentity(cluster: Cluster, key: string): Promise<string | undefined> {
  const owner = slotOwner(cluster, key);
  if (owner === undefined) return undefined;
  const node = cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner);
  if (node === undefined) return undefined;
  const info = await node.info('server');
  const runId = /run_id:(\w+)/.exec(info)?.[1];
  return runId === undefined ? undefined : `${owner}/${runId}`;
}
