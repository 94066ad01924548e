import type { RedisInput } from '../connection.js';
import type { EntityDefinition } from '../entities.js';
import { InvalidOptionError } from '../errors.js';
import { assertNamespace } from '../keys.js';
import type { PgInput } from '../pg.js';
import { UPSERT_METHODS, type UpsertMethod } from './upsert.js';

export interface FlusherOptions {
  /** Redis holding the overlay and the queue. @defaultValue `process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'` */
  readonly redis?: RedisInput | undefined;
  /** Namespace of the caches whose writes this flusher applies. Required. */
  readonly namespace: string;
  /** @defaultValue `process.env.CACHEBUS_PREFIX ?? 'cachebus'` */
  readonly prefix?: string;
  /** Postgres to write to: a pool (left open) or a connection string. @defaultValue `process.env.DATABASE_URL` */
  readonly pg?: PgInput | undefined;
  /**
   * Entities to flush. When left out, the flusher flushes every entity writers registered in
   * Redis (`<prefix>:{<namespace>}:wb:entities`), and picks up new ones at each sweep.
   * @defaultValue discovered from Redis
   */
  readonly entities?: readonly EntityDefinition[];
  /** Most rows per upsert statement (at most 5000). @defaultValue `500` */
  readonly batchSize?: number;
  /**
   * Claim-upsert-ack loops run side by side per entity, each upserting on its own Postgres
   * connection; several loops hide the Redis round trips behind each other's upserts.
   * @defaultValue `4`
   */
  readonly concurrency?: number;
  /**
   * How long a claimed batch may stay unacknowledged before its rows are due again (its flusher
   * is presumed dead: killed mid-flush, its rows wait this long). Longer than a slow upsert.
   * @defaultValue `5_000`
   */
  readonly leaseMs?: number;
  /** Every this many ms, each entity is drained whatever the queue says (lost ticks, expired leases). @defaultValue `1_000` */
  readonly sweepIntervalMs?: number;
  /** First retry delay after Postgres failed; doubles per failure, with jitter. @defaultValue `100` */
  readonly retryBaseMs?: number;
  /** Longest retry delay. @defaultValue `5_000` */
  readonly retryMaxMs?: number;
  /** How batches are sent (see UpsertMethod; measured in bench/write-behind.ts). @defaultValue `'json'` */
  readonly upsertMethod?: UpsertMethod;
  /** Tick jobs processed at once by the BullMQ worker; 0 runs no BullMQ worker (sweeps only). @defaultValue `4` */
  readonly queueConcurrency?: number;
  /**
   * Most dead letters kept (`<prefix>:{<namespace>}:wb:dead`); past it the oldest are dropped and
   * counted (`stats.deadLettersDropped`, the `wb:dead-dropped` counter in Redis). 0: no bound.
   * @defaultValue `10_000`
   */
  readonly maxDeadLetters?: number;
  /** Approximate MAXLEN of the invalidation stream, for the invalidations of flushed rows and dead letters. @defaultValue `100_000` */
  readonly streamMaxLen?: number;
}

export const kFlusherDefaults = {
  prefix: 'cachebus',
  batchSize: 500,
  concurrency: 4,
  leaseMs: 5_000,
  sweepIntervalMs: 1_000,
  retryBaseMs: 100,
  retryMaxMs: 5_000,
  upsertMethod: 'json',
  queueConcurrency: 4,
  streamMaxLen: 100_000,
  maxDeadLetters: 10_000,
} as const satisfies Partial<FlusherOptions>;

export type ResolvedFlusherOptions = FlusherOptions & Required<Omit<FlusherOptions, 'entities' | 'pg'>>;

export function resolveFlusherOptions(user: FlusherOptions): ResolvedFlusherOptions {
  if (user === null || typeof user !== 'object') throw new InvalidOptionError('options must be an object');
  const given = Object.fromEntries(Object.entries(user).filter(([, v]) => v !== undefined)) as FlusherOptions; // undefined: the default
  const o = { ...kFlusherDefaults, prefix: process.env.CACHEBUS_PREFIX ?? kFlusherDefaults.prefix, redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', ...given } as ResolvedFlusherOptions;
  assertNamespace(o.namespace);
  const int = (name: keyof FlusherOptions, min: number, max = Number.MAX_SAFE_INTEGER): void => {
    const v = o[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new InvalidOptionError(`options.${name} must be an integer from ${min} to ${max} (got ${String(v)})`);
    }
  };
  int('batchSize', 1, 5_000);
  int('concurrency', 1, 64);
  int('leaseMs', 100);
  int('sweepIntervalMs', 10);
  int('retryBaseMs', 1);
  int('retryMaxMs', 1);
  int('queueConcurrency', 0, 1000);
  int('streamMaxLen', 0);
  int('maxDeadLetters', 0);
  if (o.retryMaxMs < o.retryBaseMs) throw new InvalidOptionError('options.retryMaxMs must be at least options.retryBaseMs');
  if (!UPSERT_METHODS.includes(o.upsertMethod)) {
    throw new InvalidOptionError(`options.upsertMethod must be one of ${UPSERT_METHODS.join(', ')} (got ${String(o.upsertMethod)})`);
  }
  return o;
}
