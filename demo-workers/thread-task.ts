/**
 * The piscina task module of each HTTP worker: every thread keeps its own cache (threadCache),
 * kept coherent by the same bus, and reads through it.
 */
import { threadId, workerData } from 'node:worker_threads';
import pg from 'pg';
import { type Cache } from '../worker-runtime/index.js';
import { onThreadClose, threadCache } from '../worker-runtime/piscina/index.js';
import { cacheMetrics, reportMetricsToParent } from '../worker-runtime/metrics/index.js';
import { productLoader } from './loader.js';
import { writeModes } from './writers.js';
import { productKey, productsTable, versionOf, type Product, type ReadReply, type WorkerConfig } from './protocol.js';

const cfg = workerData as WorkerConfig & { label: string };
const pool = new pg.Pool({ connectionString: cfg.databaseUrl, max: 2 });
pool.on('error', () => undefined);
const load = productLoader(pool, productsTable(cfg.schema));
let lag: number[] = [];

const ready: Promise<Cache<Product>> = threadCache<Product>({
  redis: cfg.redisUrl ?? false, prefix: cfg.prefix, namespace: cfg.namespace,
  maxEntries: cfg.maxEntries, maxStaleMs: cfg.maxStaleMs,
}).then(async (cache) => {
  cache.on('received', (e) => lag.push(e.lagMs));
  cache.on('error', () => undefined); // counted in stats; the demo's output stays readable
  await writeModes[cfg.writer]?.prepareThread?.({ cache, pool, table: productsTable(cfg.schema), config: cfg });
  if (cfg.metrics) {
    const metrics = cacheMetrics(cache, { worker: `${cfg.label}-t${threadId}`, cluster: false });
    const stop = reportMetricsToParent(metrics.registry);
    onThreadClose(() => { stop(); metrics.close(); });
  }
  return cache;
});
onThreadClose(() => pool.end());

/** A read through this thread's cache; carries the lag samples gathered since the last read. */
export async function read(id: number): Promise<ReadReply & { lag: number[]; thread: number }> {
  const cache = await ready;
  const got = cache.get(productKey(id), () => load(id));
  const hit: 0 | 1 = got instanceof Promise ? 0 : 1; // a hit is answered synchronously
  const value = await got;
  const out = lag;
  lag = [];
  return { v: versionOf(value), h: hit, lag: out, thread: threadId };
}
