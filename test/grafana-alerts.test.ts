/**
 * grafana/alerts.yml: the rules name metrics cachebus exports, pass `promtool check rules` and
 * the unit tests of grafana/alerts.test.yml (`promtool test rules`), and fire in a real
 * Prometheus when an outbox relay breaks, a cache loses its Redis and Postgres refuses
 * write-behind rows. docs/metrics.md, "Alert rules".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { OutboxRelay } from '../bus/outbox/relay.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { installOutbox } from '../worker-runtime/postgres/index.js';
import { CacheMetrics, serveMetrics, SidecarMetrics, type MetricsServer } from '../worker-runtime/metrics/index.js';
import { MetricsApp, PROMTOOL_BIN, prometheusMissing, TestPrometheus, type PromAlert } from './helpers/prometheus.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL, TestRedis } from './helpers/redis.js';
import { until } from './helpers/wait.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8');
const missing = prometheusMissing();
if (missing) console.warn(`grafana-alerts.test.ts: SKIPPED the Prometheus alert test: ${missing}`);

interface Rule { alert: string; expr: string; for: string; labels: { severity: string }; annotations: Record<string, string> }
const ALERTS_FILE = join(ROOT, 'grafana/alerts.yml');
const rules = (parse(read('grafana/alerts.yml')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

describe('grafana/alerts.yml', () => {
  it('has a rule for each case an operator must hear of, on metrics cachebus exports', () => {
    const byName = Object.fromEntries(rules.map((r) => [r.alert, r]));
    for (const [name, metric] of [
      ['CachebusStaleReadsBeyondBound', 'cachebus_stale_read_age_seconds'],
      ['CachebusReaderNotServing', 'cachebus_servable'],
      ['CachebusBusGaps', 'cachebus_gaps_total'],
      ['CachebusOutboxErrors', 'cachebus_outbox_errors_total'],
      ['CachebusOutboxBacklogOld', 'cachebus_outbox_oldest_pending_age_seconds'],
      ['CachebusDeadLetters', 'cachebus_writebehind_dead_letters'],
      ['CachebusWriteBehindNearMaxPending', 'cachebus_writebehind_pending_rows'],
      ['CachebusWriteBehindNearMaxPending', 'cachebus_writebehind_max_pending'],
    ] as const) {
      expect(byName[name], name).toBeDefined();
      expect(byName[name]!.expr, name).toContain(metric);
      expect(['warning', 'critical']).toContain(byName[name]!.labels.severity);
      expect(byName[name]!.annotations.summary, name).toBeTruthy();
    }
    const cache = new CacheMetrics({ cluster: false });
    const sidecar = new SidecarMetrics();
    const known = new Set([...cache.names, ...sidecar.registry.getMetricsAsArray().map((m) => m.name)]);
    cache.close();
    for (const r of rules) {
      const names = [...r.expr.matchAll(/\b(cachebus_[a-z_]+)\b/g)].map((m) => m[1]!);
      expect(names.length, r.alert).toBeGreaterThan(0);
      for (const n of names) expect(known.has(n) || known.has(n.replace(/_(bucket|sum|count)$/, '')), `${r.alert}: unknown metric ${n}`).toBe(true);
    }
  });

  it.skipIf(!existsSync(PROMTOOL_BIN))('passes promtool check rules, and promtool test rules (each rule fires past its threshold, not below)', () => {
    const check = spawnSync(PROMTOOL_BIN, ['check', 'rules', ALERTS_FILE], { encoding: 'utf8' });
    expect(check.status, `${check.stdout}\n${check.stderr}`).toBe(0);
    expect(check.stdout).toContain(`SUCCESS: ${rules.length} rules found`);
    const test = spawnSync(PROMTOOL_BIN, ['test', 'rules', join(ROOT, 'grafana/alerts.test.yml')], { encoding: 'utf8' });
    expect(test.status, `${test.stdout}\n${test.stderr}`).toBe(0);
    // every rule is exercised by the unit tests
    const tested = new Set([...read('grafana/alerts.test.yml').matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    for (const r of rules) expect(tested.has(r.alert), `${r.alert} has no promtool test`).toBe(true);
  });
});

describe.skipIf(missing !== undefined)('the alert rules fire in a real Prometheus', () => {
  const prefix = randomPrefix();
  const NS = 'alerting';
  let dir: string;
  let redis: TestRedis;
  let schema: TestSchema;
  let wbSchema: TestSchema;
  let cache: Cache<{ v: number }>;
  let cacheMetrics: CacheMetrics;
  let relay: OutboxRelay;
  let sidecarMetrics: SidecarMetrics;
  let servers: MetricsServer[] = [];
  let wb: MetricsApp;
  let prom: TestPrometheus;

  beforeAll(async () => {
    // The shipped rules with every `for:` shortened to 1 s, evaluated every second.
    dir = mkdtempSync(join(tmpdir(), 'cachebus-alerts-'));
    const doc = parse(read('grafana/alerts.yml')) as { groups: { rules: Rule[] }[] };
    for (const g of doc.groups) for (const r of g.rules) r.for = '1s';
    writeFileSync(join(dir, 'alerts.yml'), stringify(doc));

    // A cache whose bus runs on a Redis of its own (killed below): the reader stops being current.
    redis = await TestRedis.start();
    cache = await createCache<{ v: number }>({ redis: redis.url, namespace: NS, prefix, maxEntries: 100, maxStaleMs: 400 });
    cacheMetrics = new CacheMetrics({ cluster: false, worker: 'alert-w1', cursorLagTimeoutMs: 100 });
    cacheMetrics.add(cache);
    // An outbox relay whose table is dropped below: a broken sidecar.
    schema = await TestSchema.create();
    await installOutbox(schema.pool);
    relay = new OutboxRelay({ redis: REDIS_URL, namespace: NS, prefix, pg: schema.url, pollMs: 50, listen: false });
    await relay.start();
    sidecarMetrics = new SidecarMetrics({ worker: 'alert-sidecar' }).addOutbox(relay, { namespace: NS });
    servers = [await serveMetrics(cacheMetrics, { port: 0, host: '127.0.0.1' }), await serveMetrics(sidecarMetrics, { port: 0, host: '127.0.0.1' })];
    // Write-behind with rows Postgres refuses (a CHECK constraint): dead letters.
    wbSchema = await TestSchema.create();
    wb = await MetricsApp.start({ redis: REDIS_URL, database: wbSchema.url, namespace: `${NS}-wb`, prefix }, 'metrics-sidecar');
    prom = await TestPrometheus.start({
      'cachebus-cache': [`127.0.0.1:${servers[0]!.port}`],
      'cachebus-relay': [`127.0.0.1:${servers[1]!.port}`],
      'cachebus-wb': [`127.0.0.1:${wb.port}`],
    }, 1, [join(dir, 'alerts.yml')]);
  }, 60_000);

  afterAll(async () => {
    await prom?.stop();
    for (const s of servers) await s.close();
    await wb?.stop();
    sidecarMetrics?.close();
    cacheMetrics?.close();
    await relay?.stop();
    await cache?.close();
    await redis?.dispose();
    await schema?.drop();
    await wbSchema?.drop();
    await cleanupPrefix(prefix);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  const firing = async (name: string, labels: Record<string, string>): Promise<PromAlert | undefined> =>
    (await prom.alerts()).find((a) => a.state === 'firing' && a.labels.alertname === name && Object.entries(labels).every(([k, v]) => a.labels[k] === v));

  it('quiet while healthy; then a broken outbox relay, a reader cut from Redis and refused rows each fire their alert', async () => {
    const started = Date.now();
    // Healthy first: the rules load and are evaluated over scraped, healthy series.
    await until(async () => {
      const loaded = await prom.alertRules();
      if (loaded.length !== rules.length) return false;
      for (const r of loaded) if (r.health === 'err') throw new Error(`${r.name}: ${r.lastError}`);
      const serving = await prom.query(`cachebus_servable{namespace="${NS}"} == 1`);
      const relayOk = await prom.query(`cachebus_outbox_errors_total{namespace="${NS}"} == 0`);
      return serving.length === 1 && relayOk.length === 1;
    }, 30_000, 'the rules loaded and healthy series scraped');
    const healthyAt = Date.now();
    await until(async () => (await prom.alertRules()).every((r) => Date.parse(r.lastEvaluation) > healthyAt + 1000), 15_000, 'the rules evaluated over healthy data');
    const early = (await prom.alerts()).filter((a) => a.labels.namespace === NS);
    expect(early, JSON.stringify(early)).toEqual([]);

    // A broken sidecar: its outbox table disappears under the relay.
    await schema.pool.query('DROP TABLE cachebus_outbox');
    // A worker cut from its bus: its Redis dies (SIGKILL by PID).
    await redis.stop();

    const outbox = await until(() => firing('CachebusOutboxErrors', { namespace: NS }), 30_000, 'CachebusOutboxErrors firing');
    expect(outbox.labels.severity).toBe('critical');
    expect(relay.stats.errors).toBeGreaterThan(0);
    const serving = await until(() => firing('CachebusReaderNotServing', { namespace: NS, worker: 'alert-w1' }), 30_000, 'CachebusReaderNotServing firing');
    expect(serving.annotations.summary).toContain('alert-w1');
    expect(cache.servable).toBe(false);
    const dead = await until(() => firing('CachebusDeadLetters', { namespace: `${NS}-wb` }), 30_000, 'CachebusDeadLetters firing');
    expect(Number(dead.value)).toBeGreaterThan(0);
    console.log(`grafana-alerts.test.ts: alerts fired in ${((Date.now() - started) / 1000).toFixed(1)} s: ${[outbox, serving, dead].map((a) => a.labels.alertname).join(', ')}`);
  }, 90_000);
});
