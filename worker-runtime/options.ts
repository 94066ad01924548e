import type { RedisInput } from '../bus/connection.js';
import type { PgInput } from '../bus/pg-input.js';
import { InvalidOptionError } from '../bus/errors.js';
import { assertNamespace } from '../bus/keys.js';
import type { PolicyName } from './policies/types.js';
import { RELAY_MODES, type RelayMode } from './relay-client.js';
import { validateStaleSampler, type StaleCheck } from './stale-sampler.js';

/**
 * A length of time: ms as a number, or a string with a unit, as in `'500ms'`, `'30s'`, `'5m'`,
 * `'1h'`, `'1d'` (also fractions: `'1.5h'`). Strings are converted to whole ms once, up front.
 */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h' | 'd'}`;

/**
 * Where background errors go when nobody listens to the cache's `error` event: any object with
 * pino's `error(obj, msg)`/`warn(obj, msg)` shape (pino, bunyan-style loggers, or `console`).
 * Called as `logger.error({ err, namespace }, message)`.
 */
export interface Logger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface CacheOptions<V = unknown> {
  /**
   * Redis to carry invalidations: a URL (`redis://user:pass@host:6379/0`, `rediss://` for TLS),
   * ioredis options, or an existing ioredis `Redis`/`Cluster` (not closed by `close()`).
   * `false` runs a local-only cache with no bus (each process on its own).
   * @defaultValue `process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'`
   */
  redis?: RedisInput | false | undefined;
  /** Caches that share a namespace invalidate each other. Required. */
  namespace: string;
  /** Prefix of every Redis key (one per environment sharing a Redis). @defaultValue `process.env.CACHEBUS_PREFIX ?? 'cachebus'` */
  prefix?: string | undefined;
  /** Eviction policy of the local store. @defaultValue `'lru'` */
  policy?: PolicyName | undefined;
  /** Most entries held locally. One of maxEntries, maxBytes (or ttl, for policy 'ttl') is required. */
  maxEntries?: number | undefined;
  /** Most bytes held locally, as measured by `sizeOf`. */
  maxBytes?: number | undefined;
  /** Size of an entry in bytes. @defaultValue UTF-8 length of `JSON.stringify(value)` plus the key */
  sizeOf?: ((value: V, key: string) => number) | undefined;
  /** Default time to live of an entry: ms, or a string such as `'30s'`, `'1h'`. @defaultValue none */
  ttl?: Duration | undefined;
  /**
   * Longest a loader may take (ms or `'5s'`): past it `get` rejects with LoadTimeoutError
   * (E_LOAD_TIMEOUT) for every caller of that load, and its late result is not stored.
   * Overridden per call by the entry's `timeout`. @defaultValue none (loads may take any time)
   */
  timeout?: Duration | undefined;
  /**
   * Receives background errors (bus reconnects, listener errors…) when no `error` listener is
   * attached, instead of `console.error`. @defaultValue console, one line per distinct message
   */
  logger?: Logger | undefined;
  /**
   * Bounded staleness (invariant I3): when the bus reader has not been provably caught up for
   * this long, local entries are not served and loads are not stored.
   * @defaultValue `10_000`
   */
  maxStaleMs?: number | undefined;
  /** HMAC secret: when set, entries are signed and unsigned or badly signed entries are skipped. */
  secret?: string | Buffer | undefined;
  /** Longest key or tag accepted, in bytes. @defaultValue `1024` */
  maxKeyBytes?: number | undefined;
  /** Largest stream entry written or accepted, in bytes. @defaultValue `65_536` */
  maxEntryBytes?: number | undefined;
  /** Approximate MAXLEN retention of the stream; 0 for none. @defaultValue `100_000` */
  streamMaxLen?: number | undefined;
  /** When set, MINID retention of this many ms instead of MAXLEN. @defaultValue none */
  streamMaxAgeMs?: number | undefined;
  /** Most entries one XREAD returns. @defaultValue `1000` */
  readCount?: number | undefined;
  /** XREAD BLOCK timeout, ms. @defaultValue `min(2000, maxStaleMs / 4)` */
  blockMs?: number | undefined;
  /** How long `createCache` waits for Redis before it rejects with ConnectionError. @defaultValue `10_000` */
  connectTimeoutMs?: number | undefined;
  /**
   * How invalidations wake the other workers (docs/wake-up.md). `'stream'`: the stream reader
   * alone. `'pubsub'`: publishes also PUBLISH each entry as a hint, and this cache subscribes
   * (one more connection) and drops the hinted keys at once; the stream is still read and
   * chain-checked entry by entry (in batches while hints flow), so a lost hint only delays the
   * drop to the stream's pace. Costs a PUBLISH per entry in Redis and one more connection.
   * `'host'`: publishes also send each entry straight to the other caches of the namespace on
   * this host over loopback UDP (one hop, where pub/sub takes two): one datagram to the
   * loopback broadcast address, which every cache of the namespace on the host listens on
   * (see `hostFanout`); peers find each other through a registry in Redis, re-read every
   * second. Caches on other hosts get the stream only. As with `'pubsub'`, the stream stays the
   * source of truth.
   * @defaultValue `'stream'`
   */
  wake?: 'stream' | 'pubsub' | 'host' | undefined;
  /**
   * With `wake: 'host'`, how this cache takes its peers' datagrams (docs/wake-up.md).
   * `'broadcast'`: on a port of `127.255.255.255` that the namespace's caches on the host share
   * (agreed through Redis), so that a publish is one datagram for every peer; used only when
   * the host's loopback proves it delivers broadcasts (a probe at start), else as `'unicast'`.
   * Any process on the host can bind that port too and read the key names it carries.
   * `'unicast'`: on its own ephemeral 127.0.0.1 port, one datagram per publish and peer.
   * @defaultValue `'broadcast'`
   */
  hostFanout?: 'broadcast' | 'unicast' | undefined;
  /**
   * Where invalidations come from (docs/scaling.md): `false` this cache's own Redis reader;
   * `'ipc'` the relay hub of the parent process (node:cluster primary); `'broadcast'` the hub of
   * this process (worker threads); `'auto'` the relay when a hub was started in the parent or
   * this process before this one was forked or started, else its own reader. Publishing always
   * uses the cache's own (non-blocking) connection.
   * @defaultValue `'auto'`
   */
  relay?: RelayMode | undefined;
  /**
   * Postgres for entities and `cache.transaction(fn)`: a `pg.Pool` (not closed by `close()`) or a
   * connection string (a pool of 4 is opened on first use and closed by `close()`).
   * @defaultValue `process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'`
   */
  pg?: PgInput | undefined;
  /**
   * Stale-read sampler: the fraction of local hits (0 to 1) re-checked against their source off
   * the hot path (see docs/metrics.md). 0 installs nothing on the hit path.
   * @defaultValue `0`
   */
  staleSampleRate?: number | undefined;
  /** Most stale checks in flight; hits sampled beyond it are skipped and counted. @defaultValue `2` */
  staleSampleConcurrency?: number | undefined;
  /**
   * How a sampled hit is checked: `{ compare(cached, fresh, key) }` after re-running the loader
   * passed to `get`, or `{ check(key, cached) }` of its own (e.g. an entity version compare).
   * @defaultValue re-run the loader and compare the JSON of both values
   */
  staleCheck?: StaleCheck<V> | undefined;
}

export const kCacheDefaults = {
  prefix: 'cachebus',
  policy: 'lru',
  maxStaleMs: 10_000,
  maxKeyBytes: 1024,
  maxEntryBytes: 65_536,
  streamMaxLen: 100_000,
  readCount: 1000,
  relay: 'auto',
} as const satisfies Partial<CacheOptions>;

type Defaulted = 'prefix' | 'policy' | 'maxStaleMs' | 'maxKeyBytes' | 'maxEntryBytes' | 'streamMaxLen' | 'readCount' | 'blockMs' | 'redis' | 'relay';
export type ResolvedOptions<V> = Omit<CacheOptions<V>, Defaulted | 'ttl' | 'timeout'> & Required<Pick<CacheOptions<V>, Defaulted>> & {
  /** In ms. */
  ttl?: number;
  /** In ms. */
  timeout?: number;
};

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/;

/**
 * A Duration in whole ms (at least 1), or InvalidOptionError naming `name`. Numbers must be
 * positive integers; strings a positive number and a unit (ms, s, m, h, d).
 */
export function durationMs(v: unknown, name: string): number {
  if (typeof v === 'number' && Number.isInteger(v) && v > 0) return v;
  if (typeof v === 'string') {
    const m = DURATION.exec(v.trim());
    if (m !== null) {
      const ms = Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
      if (ms >= 1 && Number.isSafeInteger(ms)) return ms;
    }
  }
  throw new InvalidOptionError(`${name} must be a positive integer of ms or a duration such as '30s', '5m', '1h' (got ${typeof v === 'string' ? JSON.stringify(v) : String(v)})`);
}

const POLICIES: readonly PolicyName[] = ['lru', 'lfu', 'fifo', 'ttl'];

function positiveInt(o: Record<string, unknown>, name: string, allowZero = false): void {
  const v = o[name];
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || (!allowZero && v === 0)) {
    throw new InvalidOptionError(`options.${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer (got ${String(v)})`);
  }
}

export const defaultSizeOf = (value: unknown, key: string): number => {
  const json = JSON.stringify(value);
  return key.length + (json === undefined ? 0 : Buffer.byteLength(json));
};

export function resolveOptions<V>(user: CacheOptions<V>): ResolvedOptions<V> {
  if (user === null || typeof user !== 'object') throw new InvalidOptionError('options must be an object');
  // An option given as undefined is an option not given (its default applies).
  const given = Object.fromEntries(Object.entries(user).filter(([, v]) => v !== undefined)) as CacheOptions<V>;
  const o = { ...kCacheDefaults, prefix: process.env.CACHEBUS_PREFIX ?? kCacheDefaults.prefix, ...given } as ResolvedOptions<V>;
  assertNamespace(o.namespace);
  if (given.ttl !== undefined) o.ttl = durationMs(given.ttl, 'options.ttl');
  if (given.timeout !== undefined) o.timeout = durationMs(given.timeout, 'options.timeout');
  if (o.logger !== undefined && (typeof o.logger !== 'object' || o.logger === null || typeof o.logger.error !== 'function' || typeof o.logger.warn !== 'function')) {
    throw new InvalidOptionError('options.logger must be an object with error(obj, msg) and warn(obj, msg) methods (pino-compatible)');
  }
  if (!POLICIES.includes(o.policy)) {
    throw new InvalidOptionError(`options.policy must be one of ${POLICIES.join(', ')} (got ${String(o.policy)})`);
  }
  for (const n of ['maxEntries', 'maxBytes', 'maxStaleMs', 'maxKeyBytes', 'maxEntryBytes', 'readCount', 'blockMs', 'streamMaxAgeMs', 'connectTimeoutMs'] as const) {
    positiveInt(o as Record<string, unknown>, n);
  }
  positiveInt(o as Record<string, unknown>, 'streamMaxLen', true);
  validateStaleSampler(o);
  if (!o.maxEntries && !o.maxBytes && !(o.policy === 'ttl' && o.ttl)) {
    throw new InvalidOptionError(
      'options.maxEntries or options.maxBytes is required (or options.ttl with policy "ttl"): an unbounded cache is a memory leak',
    );
  }
  if (o.policy === 'ttl' && !o.ttl) throw new InvalidOptionError('options.ttl must be a positive number of ms for policy "ttl"');
  if (o.maxBytes && !o.sizeOf) o.sizeOf = defaultSizeOf;
  if (o.maxKeyBytes * 2 + 512 > o.maxEntryBytes) {
    throw new InvalidOptionError('options.maxEntryBytes must be at least 2 × options.maxKeyBytes + 512');
  }
  if (o.secret !== undefined && (typeof o.secret === 'string' ? o.secret.length === 0 : !Buffer.isBuffer(o.secret))) {
    throw new InvalidOptionError('options.secret must be a non-empty string or a Buffer');
  }
  o.blockMs ??= Math.max(10, Math.min(2000, Math.floor(o.maxStaleMs / 4)));
  if (o.blockMs * 2 > o.maxStaleMs) {
    throw new InvalidOptionError('options.blockMs must be at most half of options.maxStaleMs');
  }
  if (o.redis === undefined) o.redis = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  if (o.wake !== undefined && o.wake !== 'stream' && o.wake !== 'pubsub' && o.wake !== 'host') {
    throw new InvalidOptionError(`options.wake must be 'stream', 'pubsub' or 'host' (got ${String(o.wake)})`);
  }
  if (o.hostFanout !== undefined && o.hostFanout !== 'broadcast' && o.hostFanout !== 'unicast') {
    throw new InvalidOptionError(`options.hostFanout must be 'broadcast' or 'unicast' (got ${String(o.hostFanout)})`);
  }
  if (!RELAY_MODES.includes(o.relay)) {
    throw new InvalidOptionError(`options.relay must be 'auto', 'ipc', 'broadcast' or false (got ${String(o.relay)})`);
  }
  return o;
}
