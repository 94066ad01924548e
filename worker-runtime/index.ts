/**
 * cachebus — the core entry: a worker's local cache kept coherent by the namespace's
 * invalidation stream. Needs ioredis and lru-cache only; it imports none of the optional
 * capabilities (they attach to a cache from outside):
 *   cachebus/postgres      entities, transactions, outbox triggers (pg)
 *   cachebus/write-behind  writer and flusher (bullmq, pg)
 *   cachebus/cluster       node:cluster wiring and the relay hub
 *   cachebus/piscina       worker-thread pools (piscina)
 *   cachebus/metrics       Prometheus metrics, cluster and thread aggregation (prom-client)
 * What each file owns and which invariants (docs/guarantees.md) live where: README.md.
 */
export { createCache, Cache, type Awaitable, type Loader, type Cacheable, type EntryOptions } from './cache.js';
export type { CacheOptions, Duration, Logger } from './options.js';
export type { CacheEvents, CacheEventName, CacheStats, DropReason, ClearCause } from './events.js';
export type { PolicyName } from './policies/types.js';
export {
  errors, CachebusError, InvalidOptionError, InvalidKeyError, InvalidValueError, PublishError,
  ClosedError, ConnectionError, BadEntryError, LoadTimeoutError, MissingPeerError, type BadEntryReason,
  UnknownEntityError, TransactionRolledBackError, TransactionOutcomeUnknownError,
  BackpressureError, WriteModeError, ClusterError, RelayError,
} from '../bus/errors.js';
export type { GapCause, ReaderStatus } from '../bus/reader.js';
export { PROTOCOL_VERSION, type Invalidation } from '../bus/wire.js';
export type { PgInput, PgPoolLike } from '../bus/pg-input.js';
export { DependencyGraph, type DependencyRule } from './dependencies.js';
export type { RelayMode } from './relay-client.js';
export type { RedisClientLike } from '../bus/redis-like.js';
export {
  StaleSampler, type StaleCheck, type StaleVerdict, type StaleResult, type StaleSamplerStats,
} from './stale-sampler.js';
