/**
 * One HTTP worker of the demo (forked by startCluster): a cache in the main thread, a piscina
 * pool whose threads each have their own cache, and a tiny HTTP API for the load driver.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { onShutdown, workerConfig, workerIndex, workerReady } from '../worker-runtime/cluster/index.js';
import { closeCachePool, createCachePool, threadStats } from '../worker-runtime/piscina/index.js';
import { cacheMetrics, ThreadMetricsCollector } from '../worker-runtime/metrics/index.js';
import { productLoader } from './loader.js';
import {
  productKey, productsTable, versionOf, type LiveReply, type Product, type ReadReply, type ReadyInfo, type StatsReply, type WorkerConfig,
} from './protocol.js';
import { writeModes } from './writers.js';

const cfg = workerConfig<WorkerConfig>();
const table = productsTable(cfg.schema);

const pool = new pg.Pool({ connectionString: cfg.databaseUrl, max: 3 });
pool.on('error', () => undefined);
const load = productLoader(pool, table);

const cache: Cache<Product> = await createCache<Product>({
  redis: cfg.redisUrl ?? false, prefix: cfg.prefix, namespace: cfg.namespace,
  maxEntries: cfg.maxEntries, maxStaleMs: cfg.maxStaleMs,
  // With /metrics on, re-check 1 % of local hits against Postgres, so Grafana's stale-read panels have data.
  staleSampleRate: cfg.metrics ? 0.01 : 0,
});
const lag: number[] = [];
let cacheErrors = 0;
cache.on('received', (e) => lag.push(e.lagMs));
cache.on('error', () => { cacheErrors++; });
const label = `w${workerIndex()}`;
// The metrics module: this cache's series, and (collected over a BroadcastChannel) its threads'.
const metrics = cfg.metrics ? cacheMetrics(cache, { worker: label, cluster: false }) : undefined;
const collector = metrics && new ThreadMetricsCollector({ registries: [metrics.registry] });

const threads = createCachePool<number, ReadReply & { lag: number[] }>({
  filename: fileURLToPath(new URL('./thread-task.js', import.meta.url)),
  name: 'read', minThreads: cfg.threads, maxThreads: cfg.threads, concurrentTasksPerWorker: 8,
  workerData: { ...cfg, label } satisfies WorkerConfig & { label: string },
});
const mode = writeModes[cfg.writer];
if (mode === undefined) throw new Error(`unknown write mode ${cfg.writer}`);
const writer = await mode.writer({ cache, pool, table, config: cfg });

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

async function readMain(id: number): Promise<ReadReply> {
  const got = cache.get(productKey(id), () => load(id));
  const h: 0 | 1 = got instanceof Promise ? 0 : 1; // a hit is answered synchronously
  return { v: versionOf(await got), h };
}

async function readThread(id: number): Promise<ReadReply> {
  const r = await threads.run(id);
  if (r.lag.length > 0) lag.push(...r.lag);
  return { v: r.v, h: r.h };
}

async function stats(): Promise<StatsReply> {
  return { main: structuredClone(cache.stats), threads: await threadStats(threads, 5_000), lag, cacheErrors };
}

/** GET /live?from=N → the lag samples from index N on, and the gaps and clears of all this worker's caches. */
async function live(from: number): Promise<LiveReply> {
  const gaps: Record<string, number> = { ...cache.stats.gaps };
  const clears: Record<string, number> = { ...cache.stats.clears };
  for (const t of await threadStats(threads, 700).catch(() => [])) {
    for (const [c, n] of Object.entries(t.stats.gaps)) gaps[c] = (gaps[c] ?? 0) + n;
    for (const [c, n] of Object.entries(t.stats.clears)) clears[c] = (clears[c] ?? 0) + n;
  }
  return { lag: lag.slice(from), next: lag.length, gaps, clears };
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? '/';
  const m = /^\/(r|w)\/(\d+)(\?t=1)?$/.exec(url);
  if (m !== null) {
    const id = Number(m[2]);
    if (m[1] === 'w' && req.method === 'POST') reply(res, 200, await writer.write(id));
    else if (m[1] === 'r') reply(res, 200, m[3] ? await readThread(id) : await readMain(id));
    else reply(res, 405, { error: 'method' });
  } else if (url.startsWith('/live?from=')) {
    reply(res, 200, await live(Number(url.slice('/live?from='.length)) || 0));
  } else if (url === '/stats') {
    reply(res, 200, await stats());
  } else if (url === '/metrics.json') {
    reply(res, 200, collector ? await (await collector.aggregate()).getMetricsAsJSON() : []);
  } else {
    reply(res, 404, { error: 'not found' });
  }
}

const server = createServer((req, res) => {
  req.resume();
  route(req, res).catch((err: unknown) => reply(res, 500, { error: String((err as Error)?.message ?? err) }));
});
server.keepAliveTimeout = 30_000;
// exclusive: this worker's own port, so the driver picks which worker serves each request.
await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, resolve));

onShutdown(async () => {
  await pool.end().catch(() => undefined);
});
onShutdown(async () => {
  collector?.close();
  metrics?.close();
  await cache.close();
});
onShutdown(async () => { await writer.close?.(); });
onShutdown(() => closeCachePool(threads));
onShutdown(() => new Promise<void>((resolve) => {
  server.close(() => resolve());
  server.closeAllConnections();
}));

// Ready once every thread has its cache (created when the thread loads the task module): the
// load, and the faults, only start when all caches of this worker are up.
const deadline = Date.now() + 30_000;
while ((await threadStats(threads, 1_000)).length < cfg.threads) {
  if (Date.now() > deadline) throw new Error(`the ${cfg.threads} piscina threads did not create their caches within 30 s`);
}

workerReady({ port: (server.address() as AddressInfo).port, pid: process.pid } satisfies ReadyInfo);
