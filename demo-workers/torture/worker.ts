/**
 * One torture worker (forked by startCluster): a cache in the main thread, one piscina thread
 * with its own cache, every write path, and a tiny HTTP API the primary drives. Uses only the
 * package's public API.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createCache, type Cache, type CacheStats } from '../../worker-runtime/index.js';
import { cacheMetrics } from '../../worker-runtime/metrics/index.js';
import { transaction } from '../../worker-runtime/postgres/index.js';
import { onShutdown, workerConfig, workerIndex, workerReady } from '../../worker-runtime/cluster/index.js';
import { closeCachePool, createCachePool, threadStats } from '../../worker-runtime/piscina/index.js';
import { groupOf, tagOf, type ReadAnswer, type TortureReady, type TortureWorkerConfig, type WorkerStats, type WriteAnswer } from './layout.js';
import { paths, type Value } from './reads.js';

// The clock-jump fault steps this process's wall clock (as an NTP step would): every `t` it
// publishes, every lag it measures and every timestamp BullMQ takes come from the jumped clock.
const realNow = Date.now;
let clockOffsetMs = 0;
Date.now = () => realNow() + clockOffsetMs;

const cfg = workerConfig<TortureWorkerConfig>();
const redisUrl = cfg.redisUrls[workerIndex()]!;
const table = `"${cfg.schema}".products`;
const pool = new pg.Pool({ connectionString: cfg.databaseUrl, max: 4 });
pool.on('error', () => undefined);

const kWakeModes = ['stream', 'host', 'pubsub'] as const;

/** The worker's cache; opening is tried again while Redis is stalled or restarting under the nemesis. */
async function openCache(): Promise<Cache<Value>> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      return await createCache<Value>({
        redis: redisUrl, prefix: cfg.prefix, namespace: cfg.namespace, maxEntries: 10_000, maxStaleMs: cfg.maxStaleMs, pg: pool,
        // Every wake-up mode under the nemesis: hints (pub/sub messages, same-host datagrams) drop
        // keys early, and while they flow the reader only sends proving reads (docs/wake-up.md).
        wake: kWakeModes[workerIndex() % kWakeModes.length],
      });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
const cache: Cache<Value> = await openCache();
cache.on('error', () => undefined);
// The invalidation-lag histogram (fed by every entry received, `now - t`) must stay a finite,
// non-negative sum whatever the publishers' clocks do; the raw event lag is kept to report it.
const metrics = cacheMetrics(cache, { cluster: false });
const rawLag = { min: Infinity, max: -Infinity, nonFinite: 0 };
cache.on('received', ({ lagMs }) => {
  if (!Number.isFinite(lagMs)) rawLag.nonFinite++;
  else { rawLag.min = Math.min(rawLag.min, lagMs); rawLag.max = Math.max(rawLag.max, lagMs); }
});
const { wb, ent, read } = await paths(cache, pool, cfg);
const threads = createCachePool<number, ReadAnswer>({
  filename: fileURLToPath(new URL('./thread-task.js', import.meta.url)),
  minThreads: 1, maxThreads: 1, concurrentTasksPerWorker: 8, workerData: { ...cfg, redisUrl },
});
const noPublish = cfg.mutation === 'no-publish';

const bump = `UPDATE ${table} SET version = version + 1, price = price + 1 WHERE id = $1 RETURNING version`;
let price = 1_000;
let flip = 0;

/** Publishes after the row changed; a failed publish is reported (pub 0), never hidden. */
async function publish(fn: () => Promise<void>): Promise<0 | 1> {
  if (noPublish) return 1;
  try {
    await fn();
    return 1;
  } catch {
    return 0;
  }
}

async function sqlWrite(id: number, after: () => Promise<void>): Promise<WriteAnswer> {
  const r = await pool.query<{ version: string }>(bump, [id]);
  return { v: Number(r.rows[0]!.version), pub: await publish(after), how: 'sql' };
}

async function txWrite(id: number): Promise<WriteAnswer> {
  // A PublishError after COMMIT rejects: the row changed, the primary counts the write as uncertain.
  const v = await transaction(cache, pool, async (tx) => {
    const r = await tx.query<{ version: string }>(bump, [id]);
    if (!noPublish) tx.invalidate(`product:${id}`);
    return Number(r.rows[0]!.version);
  });
  return { v, pub: 1, how: 'tx' };
}

async function write(id: number): Promise<WriteAnswer> {
  switch (groupOf(id)) {
    case 'wb': {
      const r = await wb.write({ id, name: `row ${id}`, price: price++ });
      return { v: Number(r.version), pub: 1, how: 'write-behind' };
    }
    case 'entity': {
      const row = await ent.update(id, { price: price++ });
      if (row === undefined) throw new Error(`no row ${id}`);
      return { v: Number(row.version), pub: 1, how: 'entity' };
    }
    case 'tags': return sqlWrite(id, () => cache.invalidateTags(tagOf(id)));
    case 'deps': return txWrite(id);
    default: return (flip++ & 1) === 0 ? sqlWrite(id, () => cache.invalidate(`product:${id}`)) : txWrite(id);
  }
}

const gapsOf = (s: CacheStats): number => Object.values(s.gaps).reduce((a, b) => a + b, 0);

async function lagMetric(): Promise<WorkerStats['lag']> {
  const h = await metrics.registry.getSingleMetric('cachebus_invalidation_lag_seconds')?.get();
  const pick = (suffix: string): number => h?.values.filter((v) => (v as { metricName?: string }).metricName?.endsWith(suffix)).reduce((a, v) => a + v.value, 0) ?? 0;
  return {
    count: pick('_count'), sumSeconds: pick('_sum'), nonFinite: rawLag.nonFinite,
    minMs: Number.isFinite(rawLag.min) ? rawLag.min : null, maxMs: Number.isFinite(rawLag.max) ? rawLag.max : null,
  };
}

async function stats(): Promise<WorkerStats> {
  const t = await threadStats(threads, 1_000);
  return {
    pid: process.pid, gaps: [gapsOf(cache.stats), ...t.map((x) => gapsOf(x.stats))], servable: [cache.servable, ...t.map((x) => x.servable)],
    lag: await lagMetric(),
  };
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const jump = /^\/clock\/(-?\d+)$/.exec(req.url ?? '');
  if (jump !== null) {
    clockOffsetMs = Number(jump[1]);
    reply(res, 200, { offsetMs: clockOffsetMs });
    return;
  }
  const m = /^\/(r|t|w|block)\/(\d+)$/.exec(req.url ?? '');
  if (m === null) {
    if (req.url === '/stats') reply(res, 200, await stats());
    else reply(res, 404, { error: 'not found' });
    return;
  }
  const n = Number(m[2]);
  if (m[1] === 'r') reply(res, 200, await read(n));
  else if (m[1] === 't') reply(res, 200, await threads.run(n));
  else if (m[1] === 'w') reply(res, 200, await write(n));
  else {
    reply(res, 200, { blocked: n });
    // The reply leaves first; then this event loop is busy for n ms (timers, the reader, HTTP all wait).
    setImmediate(() => { const end = Date.now() + n; while (Date.now() < end) { /* busy */ } });
  }
}

const server = createServer((req, res) => {
  req.resume();
  route(req, res).catch((err: unknown) => reply(res, 500, { error: String((err as Error)?.message ?? err) }));
});
server.keepAliveTimeout = 30_000;
await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, resolve));

onShutdown(() => new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections(); }));
onShutdown(() => closeCachePool(threads));
onShutdown(async () => { metrics.close(); await wb.close(); await cache.close(); await pool.end().catch(() => undefined); });

// Ready once the thread has its cache: the load and the faults start when every cache is up.
const deadline = Date.now() + 60_000;
while ((await threadStats(threads, 1_000)).length < 1) {
  if (Date.now() > deadline) throw new Error('the piscina thread did not create its cache within 60 s');
  await threads.run(1).catch(() => undefined);
}
workerReady({ port: (server.address() as AddressInfo).port, pid: process.pid } satisfies TortureReady);
