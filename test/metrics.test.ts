import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { busKeys } from '../bus/keys.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { CacheMetrics, serveMetrics, type MetricsServer } from '../worker-runtime/metrics/index.js';
import { ChaosProxy } from './helpers/proxy.js';
import { parseExposition, scrape, value, type Exposition } from './helpers/prometheus.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';

let prefix: string;
let raw: Redis;
const caches: Cache<{}>[] = [];
const closers: (() => unknown)[] = [];

async function make(extra: Record<string, unknown> = {}): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 1000, ...extra });
  caches.push(c);
  return c;
}

function metricsOf(cache: Cache<{}>, worker = 'w1', extra: Record<string, unknown> = {}): CacheMetrics {
  const m = new CacheMetrics({ worker, cluster: false, ...extra });
  m.add(cache);
  closers.push(() => m.close());
  return m;
}

const read = async (m: CacheMetrics): Promise<Exposition> => parseExposition(await m.metrics());

beforeEach(() => {
  prefix = randomPrefix();
  raw = new Redis(REDIS_URL);
});

afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  for (const c of closers.splice(0).reverse()) await c();
  raw.disconnect();
  await cleanupPrefix(prefix);
});

const ALLOWED_LABELS = new Set(['namespace', 'worker', 'reason', 'cause', 'status', 'result', 'source', 'le']);

describe('cache metrics', () => {
  it('follow Prometheus naming, carry only bounded labels and never a key name', async () => {
    const a = await make();
    const b = await make();
    const m = metricsOf(a);
    await a.get('user:42', () => ({ name: 'Ada' }));
    a.get('user:42', () => ({ name: 'never' }));
    const received = waitForEvent(a, 'received');
    await b.invalidate('user:42');
    await received;
    const e = await read(m);
    expect(e.types.size).toBeGreaterThanOrEqual(25);
    for (const [name, type] of e.types) {
      expect(name).toMatch(/^cachebus_[a-z_]+$/);
      if (type === 'counter') expect(name).toMatch(/_total$/);
      else expect(name).not.toMatch(/_total$/);
      if (type === 'histogram') expect(name).toMatch(/_seconds$/);
      expect(e.help.get(name)?.length).toBeGreaterThan(10);
    }
    for (const s of e.samples) {
      for (const l of Object.keys(s.labels)) expect(ALLOWED_LABELS.has(l), `${s.name} has label ${l}`).toBe(true);
      expect(s.labels.namespace).toBe('shop');
      expect(s.labels.worker).toBe('w1');
    }
    expect(await m.metrics()).not.toContain('user:42');
    expect(m.names.sort()).toEqual([...e.types.keys()].sort());
  });

  it('move with hits, misses, loads, invalidations published, received and applied, and lag', async () => {
    const a = await make();
    const b = await make();
    const ma = metricsOf(a, 'wa');
    const mb = metricsOf(b, 'wb');
    let e = await read(ma);
    expect(value(e, 'cachebus_hits_total')).toBe(0);
    expect(value(e, 'cachebus_reader_status', { status: 'ready' })).toBe(1);
    expect(value(e, 'cachebus_reader_status', { status: 'reconnecting' })).toBe(0);
    expect(value(e, 'cachebus_servable')).toBe(1);

    for (let i = 0; i < 3; i++) await a.get(`k${i}`, () => ({ i, pad: 'x'.repeat(10) }));
    for (let i = 0; i < 5; i++) a.get('k0', () => ({ never: true }));
    await expect(a.get('bad', () => { throw new Error('db down'); })).rejects.toThrow('db down');
    const applied = waitForEvent(a, 'received');
    await b.invalidate('k1', 'k2');
    await applied;

    e = await read(ma);
    expect(value(e, 'cachebus_hits_total')).toBe(5);
    expect(value(e, 'cachebus_misses_total')).toBe(4);
    expect(value(e, 'cachebus_loads_total')).toBe(4);
    expect(value(e, 'cachebus_load_errors_total')).toBe(1);
    expect(value(e, 'cachebus_load_duration_seconds_count')).toBe(4);
    expect(value(e, 'cachebus_entries')).toBe(1);
    expect(value(e, 'cachebus_invalidations_received_total')).toBe(1);
    expect(value(e, 'cachebus_invalidations_applied_total')).toBe(1);
    expect(value(e, 'cachebus_invalidated_entries_total')).toBe(2);
    expect(value(e, 'cachebus_invalidation_lag_seconds_count')).toBe(1);
    expect(value(e, 'cachebus_invalidation_lag_seconds_bucket', { le: '+Inf' })).toBe(1);
    expect(value(e, 'cachebus_invalidation_lag_seconds_sum')).toBeGreaterThanOrEqual(0);
    expect(value(e, 'cachebus_bus_cursor_lag_entries')).toBe(0);

    const eb = await read(mb);
    expect(value(eb, 'cachebus_invalidations_published_total')).toBe(1);
    expect(value(eb, 'cachebus_bus_entries_published_total')).toBe(1);
    expect(value(eb, 'cachebus_invalidations_received_total')).toBe(0);
  });

  it('report evictions by reason and bytes', async () => {
    const a = await make({ maxEntries: 2, maxBytes: 10_000 });
    const m = metricsOf(a);
    for (let i = 0; i < 5; i++) await a.get(`k${i}`, () => ({ i }));
    const e = await read(m);
    expect(value(e, 'cachebus_evictions_total', { reason: 'evict' })).toBe(3);
    expect(value(e, 'cachebus_evictions_total', { reason: 'expire' })).toBe(0);
    expect(value(e, 'cachebus_entries')).toBe(2);
    expect(value(e, 'cachebus_bytes')).toBeGreaterThan(0);
  });

  it('count gaps and clears by cause, and bad entries by reason', async () => {
    const a = await make({ maxStaleMs: 1000 });
    const b = await make();
    const m = metricsOf(a);
    const stream = busKeys(prefix, 'shop').stream;
    const first = waitForEvent(a, 'received');
    await b.invalidate('x');
    await first;
    const bad = waitForEvent(a, 'badEntry');
    await raw.xadd(stream, '*', 'garbage', '1');
    await bad;
    const gap = waitForEvent<{ cause: string }>(a, 'gap');
    await raw.del(stream); // the stream is gone while the reader had read from it
    expect((await gap).cause).toBe('missing');
    const e = await read(m);
    expect(value(e, 'cachebus_gaps_total', { cause: 'missing' })).toBe(1);
    expect(value(e, 'cachebus_gaps_total', { cause: 'trimmed' })).toBe(0);
    expect(value(e, 'cachebus_clears_total', { cause: 'gap' })).toBe(1);
    expect(value(e, 'cachebus_bad_entries_total', { reason: 'malformed' })).toBe(1);
    expect(value(e, 'cachebus_bad_entries_total', { reason: 'signature' })).toBe(0);
  });

  it('compute the bus cursor lag at scrape time: entries behind the stream end', async () => {
    const proxy = await ChaosProxy.start(new URL(REDIS_URL).port ? Number(new URL(REDIS_URL).port) : 6379);
    closers.push(() => proxy.close());
    // Commands go straight to Redis; the blocking reader's connection goes through the proxy.
    const client = new Redis(REDIS_URL);
    closers.push(() => client.disconnect());
    const duplicate = client.duplicate.bind(client);
    client.duplicate = (override) => duplicate({ ...override, port: proxy.port, host: '127.0.0.1' });
    const a = await make({ redis: client });
    const b = await make();
    const m = metricsOf(a);
    expect(value(await read(m), 'cachebus_bus_cursor_lag_entries')).toBe(0);
    proxy.hold(); // the reader's XREAD answers are held back
    await b.invalidate('k1');
    await b.invalidate('k2');
    await b.invalidate('k3');
    expect(value(await read(m), 'cachebus_bus_cursor_lag_entries')).toBe(3);
    proxy.release();
    await until(async () => value(await read(m), 'cachebus_bus_cursor_lag_entries') === 0, 10_000, 'reader caught up');
    expect(a.stats.entriesReceived).toBe(3);
  });

  it('leave the cursor lag out and count a scrape error when Redis does not answer in time', async () => {
    const proxy = await ChaosProxy.start(Number(new URL(REDIS_URL).port || 6379));
    closers.push(() => proxy.close());
    const a = await make({ redis: proxy.url, maxStaleMs: 60_000 });
    const m = metricsOf(a, 'w1', { cursorLagTimeoutMs: 100 });
    proxy.hold();
    let e: Exposition;
    try {
      e = await read(m);
    } finally {
      proxy.release();
    }
    expect(e.samples.filter((s) => s.name === 'cachebus_bus_cursor_lag_entries')).toEqual([]);
    expect(value(e, 'cachebus_scrape_errors_total', { source: 'cursor_lag' })).toBe(1);
    expect(value(e, 'cachebus_hits_total')).toBe(0); // the rest of the scrape is intact
  });

  it('share one registry between caches of several namespaces and stop reporting a removed cache', async () => {
    const a = await make();
    const o = await createCache<{}>({ redis: false, namespace: 'orders', maxEntries: 10 });
    caches.push(o);
    const registry = new Registry();
    const m = new CacheMetrics({ registry, worker: 'w9', cluster: false });
    closers.push(() => m.close());
    m.add(a);
    const detach = m.add(o);
    await o.get('k', () => 1);
    o.get('k', () => 1);
    let e = parseExposition(await registry.metrics());
    expect(value(e, 'cachebus_hits_total', { namespace: 'orders' })).toBe(1);
    expect(value(e, 'cachebus_hits_total', { namespace: 'shop' })).toBe(0);
    // a local-only cache has no reader and no cursor
    expect(e.samples.filter((s) => s.name === 'cachebus_reader_status' && s.labels.namespace === 'orders')).toEqual([]);
    detach();
    e = parseExposition(await registry.metrics());
    expect(e.samples.some((s) => s.labels.namespace === 'orders')).toBe(false);
    m.close();
    expect(await registry.metrics()).not.toContain('cachebus_');
  });

  it('are served over HTTP with /health', async () => {
    const a = await make();
    const m = metricsOf(a);
    const server: MetricsServer = await serveMetrics(m, { port: 0, health: () => ({ ok: a.servable }) });
    closers.push(() => server.close());
    await a.get('k', () => 1);
    a.get('k', () => 1);
    const e = await scrape(`http://127.0.0.1:${server.port}/metrics`);
    expect(value(e, 'cachebus_hits_total')).toBe(1);
    const h = await fetch(`http://127.0.0.1:${server.port}/health`);
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ ok: true });
    expect((await fetch(`http://127.0.0.1:${server.port}/nope`)).status).toBe(404);
  });
});
