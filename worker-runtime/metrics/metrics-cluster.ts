import cluster from 'node:cluster';
import { AggregatorRegistry, register as globalRegistry, type Registry } from 'prom-client';
import { serveMetrics, type HealthCheck, type MetricsServer } from './metrics-http.js';
import { ownRegistry, type RegistryLike } from './registry-like.js';

/** Registries this cluster worker reports to the primary (prom-client keeps one list). */
const reported = new Set<Registry>();

/**
 * In a node:cluster worker: makes `registry` part of what the worker answers when the primary's
 * `AggregatorRegistry` asks for metrics (prom-client's cluster protocol over IPC). The global
 * registry stays included, so the application's own metrics are aggregated too. `CacheMetrics`
 * calls this for you in a cluster worker.
 */
export function answerClusterPrimary(registry: RegistryLike): void {
  new AggregatorRegistry(); // installs prom-client's worker-side listener once
  // setRegistries checks `instanceof Registry`: an app's registry of another prom-client copy goes in through a view
  reported.add(ownRegistry(registry as unknown as Registry));
  AggregatorRegistry.setRegistries([globalRegistry, ...[...reported].filter((r) => r !== globalRegistry)]);
}

/** Undoes `answerClusterPrimary` for one registry. */
export function releaseClusterRegistry(registry: RegistryLike): void {
  if (!reported.delete(ownRegistry(registry as unknown as Registry))) return;
  AggregatorRegistry.setRegistries([globalRegistry, ...[...reported].filter((r) => r !== globalRegistry)]);
}

export interface ClusterMetricsOptions {
  /** Port of `/metrics` and `/health` on the primary; 0 picks a free one. */
  readonly port: number;
  /** Host to bind. @defaultValue `process.env.CACHEBUS_METRICS_HOST ?? '127.0.0.1'` */
  readonly host?: string;
  /**
   * `/health` of the primary. @defaultValue ok while at least one worker is connected, with the
   * number of workers
   */
  readonly health?: HealthCheck;
}

/**
 * Opt-in, in the node:cluster primary: serves `/metrics` aggregated over every worker (each
 * worker's series keep their `worker` label, so nothing is summed away; gauges carry an
 * aggregator for registries without one) and `/health`. Workers report through
 * `CacheMetrics` (or `answerClusterPrimary`). A worker that does not answer within 5 s fails
 * the scrape with a 500 (prom-client's timeout), never the process.
 */
export async function serveClusterMetrics(options: ClusterMetricsOptions): Promise<MetricsServer> {
  if (!cluster.isPrimary) throw new Error('serveClusterMetrics runs in the cluster primary');
  const aggregator = new AggregatorRegistry();
  const workers = (): number => Object.values(cluster.workers ?? {}).filter((w) => w?.isConnected()).length;
  return serveMetrics(
    { contentType: aggregator.contentType, metrics: () => aggregator.clusterMetrics() },
    {
      port: options.port,
      ...(options.host !== undefined ? { host: options.host } : {}),
      health: options.health ?? (() => ({ ok: workers() > 0, workers: workers() })),
    },
  );
}
