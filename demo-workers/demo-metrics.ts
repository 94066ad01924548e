import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import type { MetricsServer } from '../worker-runtime/metrics/index.js';

/** What /metrics reports about the demo itself, read at scrape time. */
export interface DemoLive {
  scenario: string;
  reads: number;
  staleReads: number;
  writes: number;
  hits: number;
}

type MetricJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** Other paths served beside /metrics (the live page); returns false for a path it does not know. */
export type ExtraRoutes = (req: IncomingMessage, res: ServerResponse) => boolean;

/** /metrics, /health, and `extra`'s paths, on `host:port`. */
async function listen(source: { contentType: string; metrics(): Promise<string> }, port: number, extra: ExtraRoutes | undefined): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') res.writeHead(405).end();
      else if (path === '/metrics') {
        const body = await source.metrics();
        res.writeHead(200, { 'content-type': source.contentType }).end(body);
      } else if (path === '/health') res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      else if (!extra?.(req, res)) res.writeHead(404).end();
    })().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`error: ${String((err as Error)?.message ?? err)}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, process.env.CACHEBUS_METRICS_HOST ?? '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  let closing: Promise<void> | undefined;
  return {
    port: (server.address() as AddressInfo).port,
    close: () => (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    })),
  };
}

/**
 * /metrics of the demo: the metrics of every cache (the metrics module's `cacheMetrics` in each
 * worker and each of its threads, series labelled `worker="w0"`, `worker="w0-t12"`, …), which
 * `workers()` fetches from the workers, followed by the demo's own series
 * (`cachebus_demo_*`, by scenario). `extra` serves the live page on the same port.
 */
export async function serveDemoMetrics(
  port: number, live: () => DemoLive | undefined, workers: () => Promise<MetricJson[]>, extra?: ExtraRoutes,
): Promise<MetricsServer & { note?: string }> {
  const demo = new Registry();
  const totals = new Map<string, DemoLive>();
  const counter = (name: string, help: string, pick: (l: DemoLive) => number): void => {
    new Counter({
      name, help, labelNames: ['scenario'], registers: [demo],
      collect() {
        const l = live();
        if (l) totals.set(l.scenario, { ...l });
        this.reset();
        for (const [scenario, t] of totals) this.inc({ scenario }, pick(t));
      },
    });
  };
  counter('cachebus_demo_reads_total', 'Reads made by the demo load driver.', (l) => l.reads);
  counter('cachebus_demo_stale_reads_total', 'Reads that returned a version older than the one committed when the read started (as far as known live).', (l) => l.staleReads);
  counter('cachebus_demo_writes_total', 'Writes made by the demo load driver.', (l) => l.writes);
  counter('cachebus_demo_hits_total', 'Reads answered from a local cache.', (l) => l.hits);
  new Gauge({
    name: 'cachebus_demo_scenario', help: '1 for the scenario running now.', labelNames: ['scenario'], registers: [demo],
    collect() {
      this.reset();
      const l = live();
      if (l) this.set({ scenario: l.scenario }, 1);
    },
  });
  const source = {
    contentType: demo.contentType,
    async metrics(): Promise<string> {
      const [caches, own] = await Promise.all([workers(), demo.getMetricsAsJSON()]);
      return AggregatorRegistry.aggregate([...caches, own]).metrics();
    },
  };
  try {
    return await listen(source, port, extra);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port === 0) throw err;
    const server = await listen(source, 0, extra);
    return Object.assign(server, { note: `port ${port} is taken` });
  }
}
