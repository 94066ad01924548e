import { afterEach, describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { CacheMetrics, ThreadMetricsCollector } from '../worker-runtime/metrics/index.js';
import { MetricsApp, parseExposition, scrape, value } from './helpers/prometheus.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until } from './helpers/wait.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('node:cluster', () => {
  it('the primary serves /metrics aggregated over its workers, each labelled, and /health', async () => {
    const prefix = randomPrefix();
    cleanups.push(() => cleanupPrefix(prefix));
    const app = await MetricsApp.start({ redis: REDIS_URL, namespace: 'shop', prefix, workers: 2 });
    cleanups.push(() => app.stop());
    const e = await scrape(app.metricsUrl);
    const hits = e.samples.filter((s) => s.name === 'cachebus_hits_total');
    expect(hits.map((s) => s.labels.namespace)).toEqual(['shop', 'shop']);
    // worker n made n hits: both workers' series are there, apart
    expect(hits.map((s) => s.value).sort()).toEqual([1, 2]);
    expect(new Set(hits.map((s) => s.labels.worker)).size).toBe(2);
    expect(e.types.get('cachebus_entries')).toBe('gauge');
    expect(e.samples.filter((s) => s.name === 'cachebus_reader_status' && s.labels.status === 'ready').map((s) => s.value)).toEqual([1, 1]);
    const health = await fetch(`http://127.0.0.1:${app.port}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ ok: true, workers: 2 });
  });
});

describe('worker threads', () => {
  it('report to their parent, which aggregates them with its own registry', async () => {
    const script = fileURLToPath(new URL('../dist/test/fixtures/metrics-thread.js', import.meta.url));
    const own: Cache<{}> = await createCache<{}>({ redis: false, namespace: 'shop', maxEntries: 10 });
    cleanups.push(() => own.close());
    const ownMetrics = new CacheMetrics({ worker: 'parent', cluster: false });
    ownMetrics.add(own);
    const collector = new ThreadMetricsCollector({ registries: [ownMetrics.registry], timeoutMs: 5_000 });
    cleanups.push(() => collector.close());
    const threads = [3, 5].map((hits) => new Worker(script, { workerData: { namespace: 'shop', hits } }));
    cleanups.push(() => Promise.all(threads.map((t) => t.terminate())));
    const labels = await Promise.all(threads.map((t) => new Promise<string>((resolve, reject) => {
      t.once('error', reject);
      t.on('message', (m: { ready?: boolean; worker: string }) => { if (m.ready) resolve(m.worker); });
    })));
    let e = parseExposition(await collector.metrics());
    expect(value(e, 'cachebus_hits_total', { worker: labels[0]! })).toBe(3);
    expect(value(e, 'cachebus_hits_total', { worker: labels[1]! })).toBe(5);
    expect(value(e, 'cachebus_hits_total', { worker: 'parent' })).toBe(0);
    expect(collector.threads).toBe(2);

    // a thread that stops reporting drops out; the scrape still answers
    const exited = new Promise((r) => threads[0]!.once('exit', r));
    threads[0]!.postMessage('stop');
    await exited;
    e = parseExposition(await collector.metrics());
    expect(e.samples.filter((s) => s.name === 'cachebus_hits_total').map((s) => s.labels.worker).sort()).toEqual([labels[1], 'parent'].sort());
  });

  it('a collector started after the threads finds them', async () => {
    const script = fileURLToPath(new URL('../dist/test/fixtures/metrics-thread.js', import.meta.url));
    const t = new Worker(script, { workerData: { namespace: 'late', hits: 2 } });
    cleanups.push(() => t.terminate());
    const worker = await new Promise<string>((resolve, reject) => {
      t.once('error', reject);
      t.on('message', (m: { ready?: boolean; worker: string }) => { if (m.ready) resolve(m.worker); });
    });
    const collector = new ThreadMetricsCollector({ timeoutMs: 5_000 });
    cleanups.push(() => collector.close());
    await until(() => collector.threads === 1, 5_000, 'the thread to answer who');
    const e = parseExposition(await collector.metrics());
    expect(value(e, 'cachebus_hits_total', { worker, namespace: 'late' })).toBe(2);
  });
});
