import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { serveMetrics, type MetricsServer } from '../worker-runtime/index.js';

/** What /metrics reports about the demo itself, read at scrape time. */
export interface DemoLive {
  scenario: string;
  reads: number;
  staleReads: number;
  writes: number;
  hits: number;
}

type MetricJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/**
 * /metrics of the demo: the metrics of every cache (the metrics module's `cacheMetrics` in each
 * worker and each of its threads, series labelled `worker="w0"`, `worker="w0-t12"`, …), which
 * `workers()` fetches from the workers, followed by the demo's own series
 * (`cachebus_demo_*`, by scenario).
 */
export async function serveDemoMetrics(
  port: number, live: () => DemoLive | undefined, workers: () => Promise<MetricJson[]>,
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
    return await serveMetrics(source, { port });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port === 0) throw err;
    const server = await serveMetrics(source, { port: 0 });
    return Object.assign(server, { note: `port ${port} is taken` });
  }
}
