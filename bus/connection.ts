import { Redis, type Cluster, type RedisOptions } from 'ioredis';
import { clusterFromSeeds } from './cluster.js';
import { adoptClient, isClientLike, isClusterClient, type RedisClientLike } from './redis-like.js';

/**
 * What a caller may pass as `redis`: a URL (redis:// or rediss://, with user:password for
 * AUTH/ACL), ioredis options, a client (`Redis` or `Cluster` of ioredis 5 or 6: see
 * redis-like.ts), or Redis Cluster seed URLs (`['redis://h1:7001', ...]`).
 */
export type RedisInput = string | readonly string[] | RedisOptions | RedisClientLike;
export type RedisClient = Redis | Cluster;

/** Exponential backoff with full jitter: 50 ms, 100 ms, ... capped at `maxMs`, times a random factor in [0.5, 1). */
export function backoff(attempt: number, baseMs = 50, maxMs = 5_000): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(exp * (0.5 + Math.random() / 2));
}

const retryStrategy = (times: number): number => backoff(times);

export function isClient(x: unknown): x is RedisClientLike {
  return isClientLike(x);
}

export interface Connection {
  readonly client: RedisClient;
  /** true when cachebus created the client and so must close it. */
  readonly owned: boolean;
}

/** Opens (or adopts) a command connection: a URL, ioredis options, cluster seed URLs, or a client. */
export function connect(input: RedisInput, name: string, extra: RedisOptions = {}): Connection {
  if (isClient(input)) return { client: adoptClient(input), owned: false };
  const common: RedisOptions = { retryStrategy, connectionName: name, lazyConnect: false, ...extra };
  if (Array.isArray(input)) return { client: clusterFromSeeds(input as readonly string[], common), owned: true };
  const client = typeof input === 'string' ? new Redis(input, common) : new Redis({ ...common, ...input });
  return { client, owned: true };
}

/**
 * A dedicated connection for blocking reads. Unfulfilled commands are not re-sent after a
 * reconnect (the reader re-syncs and re-issues them itself), and commands wait for the
 * connection instead of failing after N retries.
 */
export function duplicateForBlocking(client: RedisClient, name: string): RedisClient {
  const overrides = {
    connectionName: name,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: null,
    retryStrategy,
    lazyConnect: false,
  } satisfies RedisOptions;
  if (isClusterClient(client)) {
    return client.duplicate(undefined, { redisOptions: { ...client.options.redisOptions, ...overrides } });
  }
  return client.duplicate(overrides);
}

/**
 * A connection for BullMQ: `maxRetriesPerRequest: null` as BullMQ requires, and ioredis'
 * default re-sending of unfulfilled commands after a reconnect, so that BullMQ's blocking
 * commands always settle.
 */
export function duplicateForBullmq(client: RedisClient, name: string): RedisClient {
  const overrides = { connectionName: name, maxRetriesPerRequest: null, retryStrategy, lazyConnect: false } satisfies RedisOptions;
  if (isClusterClient(client)) {
    return client.duplicate(undefined, { redisOptions: { ...client.options.redisOptions, ...overrides } });
  }
  return client.duplicate(overrides);
}

/** Parses a `redis-cli`-style `INFO` section into a map. */
export function parseInfo(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0 && line[0] !== '#') out.set(line.slice(0, i), line.slice(i + 1));
  }
  return out;
}

/**
 * Closes a connection cachebus owns: QUIT when it is ready (pending replies arrive first), but
 * never waits more than `ms` for it — a stalled connection (a silent partition) would never
 * answer — and then drops it.
 */
export async function closeClient(client: RedisClient, ms = 1000): Promise<void> {
  if (client.status !== 'ready') {
    client.disconnect();
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => { timer = setTimeout(resolve, ms); });
  try {
    await Promise.race([client.quit().then(() => undefined, () => undefined), late]);
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}
