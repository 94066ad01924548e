/**
 * cachebus/metrics — Prometheus metrics of caches and of the sidecar, the /metrics server, and
 * their aggregation across node:cluster workers and worker threads. Needs `prom-client` (an
 * optional peer dependency of cachebus). Metrics listen to events; the core never imports this
 * folder. The stale-read sampler that feeds cachebus_stale_reads_total runs inside the cache
 * (options.staleSampleRate) and is exported here too.
 * No invariant of its own: metrics only listen to events (the core never imports prom-client).
 * The folder's map: ../README.md.
 */
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
} from '../stale-sampler.js';
