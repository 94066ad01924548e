/**
 * The runtime entry of cachebus/metrics (package.json "exports"; its types are index.d.ts): loads index.js
 * dynamically, so that a missing prom-client fails with MissingPeerError naming the package to
 * install instead of Node's "Cannot find package". Exports exactly what index.ts exports
 * (test/import-graph.test.ts checks it).
 */
import { loadCapability } from '../peers.js';

const m = await loadCapability('cachebus/metrics', ['prom-client'], () => import('./index.js'));

export const {
  CacheMetrics,
  cacheMetrics,
  kMetricsDefaults,
  defaultWorkerLabel,
  serveMetrics,
  serveClusterMetrics,
  answerClusterPrimary,
  reportMetricsToParent,
  ThreadMetricsCollector,
  kThreadMetricsChannel,
  SidecarMetrics,
  outboxBacklog,
  outboxOldestAge,
  StaleSampler,
} = m;
