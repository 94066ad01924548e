import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { OutboxRelay } from '../bus/outbox/relay.js';
import { installTriggers } from '../bus/outbox/triggers.js';
import { Sidecar } from '../bus/sidecar/sidecar.js';
import { Flusher } from '../bus/write-behind/flusher.js';
import { createCache } from '../worker-runtime/index.js';
import { CacheMetrics, outboxBacklog, outboxOldestAge, SidecarMetrics } from '../worker-runtime/metrics/index.js';
import { writeBehind } from '../worker-runtime/write-behind/write-behind.js';
import { TestSchema } from './helpers/pg.js';
import { parseExposition, scrape, value, type Exposition } from './helpers/prometheus.js';
import { cleanupPrefix, randomPrefix, REDIS_URL, TestRedis } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';

const NS = 'side';
const ITEMS = { name: 'items', version: 'version', columns: ['val'] };
let prefix: string;
let schema: TestSchema;
let cleanups: (() => unknown)[];

beforeEach(async () => {
  prefix = randomPrefix();
  schema = await TestSchema.create();
  cleanups = [];
});
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  await schema.drop();
  await cleanupPrefix(prefix);
});

const read = async (m: { metrics(): Promise<string> }): Promise<Exposition> => parseExposition(await m.metrics());

describe('sidecar metrics', () => {
  it('write-behind: queue depth and pending rows at scrape time, batches, rows flushed, latency, dead letters', async () => {
    await schema.pool.query("CREATE TABLE items (id int PRIMARY KEY, version bigint NOT NULL, val text CHECK (val IS DISTINCT FROM 'poison'))");
    const redis = new Redis(REDIS_URL);
    cleanups.push(() => redis.disconnect());
    const cache = await createCache<{}>({ redis: REDIS_URL, namespace: NS, prefix, maxEntries: 100 });
    cleanups.push(() => cache.close());
    const items = await writeBehind(cache, ITEMS, { pg: schema.url, flushDelayMs: 0 });
    cleanups.push(() => items.close());
    for (let i = 1; i <= 5; i++) await items.write({ id: i, val: i === 3 ? 'poison' : `v${i}` });

    // no flusher yet: the rows wait
    const metrics = new SidecarMetrics({ worker: 'sc1' });
    const flusher = await Flusher.open({ redis: REDIS_URL, namespace: NS, prefix, pg: schema.url, entities: [ITEMS], sweepIntervalMs: 50, queueConcurrency: 0 });
    cleanups.push(() => flusher.close());
    metrics.addFlusher(flusher, { namespace: NS, redis });
    cleanups.push(() => metrics.close());
    const dead = waitForEvent(flusher, 'deadLetter');
    await flusher.drainAll();
    await dead;
    await until(async () => (await redis.hlen(`${prefix}:{${NS}}:wb:items:overlay`)) === 0, 10_000, 'the overlay to drain');

    const e = await read(metrics);
    const l = { namespace: NS, worker: 'sc1' };
    expect(value(e, 'cachebus_writebehind_rows_flushed_total', l)).toBe(4);
    expect(value(e, 'cachebus_writebehind_dead_letters_total', l)).toBe(1);
    expect(value(e, 'cachebus_writebehind_dead_letters', l)).toBe(1);
    expect(value(e, 'cachebus_writebehind_pending_rows', { ...l, entity: 'items' })).toBe(0);
    expect(value(e, 'cachebus_writebehind_queue_depth', { ...l, entity: 'items' })).toBe(0);
    expect(value(e, 'cachebus_writebehind_batches_total', l)).toBeGreaterThanOrEqual(1);
    expect(value(e, 'cachebus_writebehind_flush_duration_seconds_count', l)).toBe(value(e, 'cachebus_writebehind_batches_total', l));
    expect(value(e, 'cachebus_writebehind_flush_batch_rows_sum', l)).toBe(5);
    expect(await metrics.metrics()).not.toContain('poison');
  });

  it('write-behind: pending rows and queue depth count rows not flushed yet', async () => {
    await schema.pool.query('CREATE TABLE items (id int PRIMARY KEY, version bigint NOT NULL, val text)');
    const redis = new Redis(REDIS_URL);
    cleanups.push(() => redis.disconnect());
    const cache = await createCache<{}>({ redis: REDIS_URL, namespace: NS, prefix, maxEntries: 100 });
    cleanups.push(() => cache.close());
    const items = await writeBehind(cache, ITEMS, { pg: schema.url, flushDelayMs: 60_000, maxPending: 4 });
    cleanups.push(() => items.close());
    // the limit the alert divides by comes from the worker's metrics
    const worker = new CacheMetrics({ worker: 'w1', cluster: false });
    worker.add(cache);
    cleanups.push(() => worker.close());
    expect(value(await read(worker), 'cachebus_writebehind_max_pending', { entity: 'items', namespace: NS, worker: 'w1' })).toBe(4);
    for (let i = 1; i <= 3; i++) await items.write({ id: i, val: `v${i}` });
    // a flusher that is stopped: reported, but it takes nothing
    const flusher = await Flusher.open({ redis: REDIS_URL, namespace: NS, prefix, pg: schema.url, entities: [ITEMS], sweepIntervalMs: 60_000, queueConcurrency: 0 });
    await flusher.close();
    const metrics = new SidecarMetrics({ worker: 'sc1' }).addFlusher(flusher, { namespace: NS, redis });
    cleanups.push(() => metrics.close());
    const e = await read(metrics);
    expect(value(e, 'cachebus_writebehind_pending_rows', { entity: 'items' })).toBe(3);
    expect(value(e, 'cachebus_writebehind_queue_depth', { entity: 'items' })).toBe(3);
  });

  it('outbox: backlog counted at scrape time, rows relayed, served on the Sidecar /metrics', async () => {
    await schema.pool.query('CREATE TABLE prices (id int PRIMARY KEY, amount int NOT NULL)');
    await schema.pool.query('INSERT INTO prices SELECT g, 0 FROM generate_series(1, 10) g');
    await installTriggers(schema.pool, { name: 'prices', columns: ['amount'] }, { namespace: NS });
    await schema.pool.query('UPDATE prices SET amount = 1 WHERE id <= 7');
    const relay = new OutboxRelay({ pg: schema.url, redis: REDIS_URL, namespace: NS, prefix, pollMs: 20 });
    const metrics = new SidecarMetrics({ worker: 'sc1' })
      .addOutbox(relay, { namespace: NS, backlog: outboxBacklog(schema.pool), oldestAge: outboxOldestAge(schema.pool, 'cachebus_outbox', NS) });
    cleanups.push(() => metrics.close());
    expect(value(await read(metrics), 'cachebus_outbox_backlog_rows')).toBe(7);
    // the oldest pending row, read at scrape time (here made 90 s old): grows while nothing relays
    await schema.pool.query("UPDATE cachebus_outbox SET created_at = clock_timestamp() - interval '90 seconds' WHERE id = (SELECT min(id) FROM cachebus_outbox)");
    const age = value(await read(metrics), 'cachebus_outbox_oldest_pending_age_seconds', { namespace: NS });
    expect(age).toBeGreaterThanOrEqual(90);
    expect(age).toBeLessThan(150);
    expect(value(await read(metrics), 'cachebus_outbox_rows_total')).toBe(0);

    const sidecar = new Sidecar({ port: 0, metrics }).add(relay);
    cleanups.push(() => sidecar.stop());
    await sidecar.start();
    const url = `http://127.0.0.1:${sidecar.port}/metrics`;
    await until(async () => value(await scrape(url), 'cachebus_outbox_backlog_rows') === 0, 10_000, 'the outbox to drain');
    const e = await scrape(url);
    expect(value(e, 'cachebus_outbox_rows_total')).toBe(7);
    expect(value(e, 'cachebus_outbox_batches_total')).toBeGreaterThanOrEqual(1);
    // drained: 0, and another namespace's old row is not this one's
    await schema.pool.query("INSERT INTO cachebus_outbox (namespace, key, created_at) VALUES ('other', 'prices:1', clock_timestamp() - interval '1 hour')");
    expect(value(await scrape(url), 'cachebus_outbox_oldest_pending_age_seconds', { namespace: NS })).toBe(0);
  });

  it('leaves a gauge out and counts a scrape error when Redis is gone, and never fails the scrape', async () => {
    const own = await TestRedis.start();
    cleanups.push(() => own.dispose());
    const redis = new Redis(own.url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
    redis.on('error', () => undefined);
    cleanups.push(() => redis.disconnect());
    const flusherLike = {
      keys: { stream: `${prefix}:{${NS}}:inval`, base: `${prefix}:{${NS}}` },
      entities: [{ name: 'items' }],
      stats: { batches: 0, rowsFlushed: 0, rowsStale: 0, deadLetters: 0, retries: 0, redisErrors: 0 },
      on: () => undefined,
      off: () => undefined,
    };
    const metrics = new SidecarMetrics({ worker: 'sc1', timeoutMs: 500 }).addFlusher(flusherLike, { namespace: NS, redis });
    cleanups.push(() => metrics.close());
    expect(value(await read(metrics), 'cachebus_writebehind_queue_depth')).toBe(0);
    await own.stop();
    const e = await read(metrics);
    expect(e.samples.filter((s) => s.name === 'cachebus_writebehind_queue_depth')).toEqual([]);
    expect(value(e, 'cachebus_sidecar_scrape_errors_total', { source: 'queue_depth' })).toBe(1);
    expect(value(e, 'cachebus_sidecar_scrape_errors_total', { source: 'dead_letters' })).toBe(1);
    expect(value(e, 'cachebus_writebehind_batches_total')).toBe(0);
  });
});
