/** cachebus public API. */
export { createCache, Cache, type Awaitable, type Loader, type Cacheable, type EntryOptions } from './cache.js';
export type { CacheOptions, Duration, Logger } from './options.js';
export type { CacheEvents, CacheEventName, CacheStats, DropReason, ClearCause } from './events.js';
export type { PolicyName } from './policies/types.js';
export {
  errors, CachebusError, InvalidOptionError, InvalidKeyError, InvalidValueError, PublishError,
  ClosedError, ConnectionError, BadEntryError, LoadTimeoutError, type BadEntryReason,
} from '../bus/errors.js';
export type { GapCause, ReaderStatus } from '../bus/reader.js';
export { PROTOCOL_VERSION, type Invalidation } from '../bus/wire.js';
export { DependencyGraph, type DependencyRule } from './dependencies.js';
export { Transaction, type TransactionDb, type TransactionOptions } from './transaction.js';
export { EntityHandle, type Row, type RowShape, type Id } from './entity.js';
export type { Entity, EntityDefinition } from '../bus/entities.js';
export type { PgInput } from '../bus/pg.js';
export type { RedisInput } from '../bus/connection.js';
export type { RedisClientLike } from '../bus/redis-like.js';
export { UnknownEntityError, TransactionRolledBackError, TransactionOutcomeUnknownError } from '../bus/errors.js';
export { installTriggers, uninstallTriggers, installOutbox, OUTBOX_CHANNEL, type TriggerOptions, type InstalledTriggers } from '../bus/outbox/triggers.js';
export {
  CacheMetrics, cacheMetrics, kMetricsDefaults, type CacheMetricsOptions,
} from './metrics.js';
export { defaultWorkerLabel, type BaseLabels } from './metrics-labels.js';
export type { RegistryLike } from './registry-like.js';
export { serveMetrics, type MetricsSource, type MetricsServer, type MetricsServerOptions, type HealthCheck } from './metrics-http.js';
export { serveClusterMetrics, answerClusterPrimary, type ClusterMetricsOptions } from './metrics-cluster.js';
export { reportMetricsToParent, ThreadMetricsCollector, kThreadMetricsChannel, type ThreadMetricsOptions } from './metrics-threads.js';
export {
  SidecarMetrics, outboxBacklog, outboxOldestAge, type SidecarMetricsOptions, type FlusherSource, type OutboxSource, type Queryable,
} from './metrics-sidecar.js';
export {
  StaleSampler, type StaleCheck, type StaleVerdict, type StaleResult, type StaleSamplerStats,
} from './stale-sampler.js';
export {
  startCluster, ClusterHandle, kClusterDefaults, isClusterWorker, workerIndex, workerConfig, workerReady, onShutdown,
  type ClusterOptions, type ClusterWorkerInfo, type ClusterEvents,
} from './cluster.js';
export { ClusterError } from '../bus/errors.js';
export {
  threadCache, onThreadClose, createCachePool, threadStats, closeCachePool, type PiscinaOptions, type ThreadCacheStats,
} from './piscina.js';
export {
  startRelayHub, RelayHub, kRelayHubDefaults, type RelayHubOptions, type RelayHubStats, type RelayHubEvents,
} from '../bus/relay/hub.js';
export { relayHubService } from '../bus/relay/service.js';
export type { RelayMode } from './relay-client.js';
export { RelayError } from '../bus/errors.js';
export {
  writeBehind, writeBehindOf, WriteBehindEntity, type WriteBehindOptions, type WriteResult,
} from './write-behind.js';
export { BackpressureError, WriteModeError } from '../bus/errors.js';
export {
  Flusher, createFlusherService, kFlusherDefaults, kWriterDefaults, DURABILITY_WARNING,
  type FlusherOptions, type FlusherEvents, type FlusherStats, type FlusherService, type FlushInfo,
  type DeadInfo, type RetryInfo, type UpsertMethod, type DeadLetter,
} from '../bus/write-behind/index.js';
