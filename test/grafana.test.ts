import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { CacheMetrics, SidecarMetrics } from '../worker-runtime/metrics/index.js';
import {
  MetricsApp, PROMTOOL_BIN, prometheusMissing, TestPrometheus, type PromResult,
} from './helpers/prometheus.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, freePort, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until } from './helpers/wait.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8');

interface Target { refId: string; expr: string; datasource?: { uid?: string } }
interface Panel { id: number; type: string; title: string; datasource?: { uid?: string }; targets?: Target[]; gridPos: { x: number; y: number; w: number; h: number } }
interface Variable { name: string; query: string; allValue?: string; includeAll?: boolean; datasource?: { uid?: string } }
interface Dashboard { uid: string; panels: Panel[]; templating: { list: Variable[] } }

const dashboard = JSON.parse(read('grafana/dashboards/cachebus.json')) as Dashboard;
const queryPanels = dashboard.panels.filter((p) => p.type !== 'row');

// ---- the JSON Schema of @grafana/schema's Dashboard type, generated at test time -----------

/** Generates (or reads from the temp-dir cache) the JSON Schema of the raw `Dashboard` type. */
async function dashboardSchema(): Promise<object> {
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve('@grafana/schema/package.json');
  const version = (JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string }).version;
  const cacheDir = join(tmpdir(), 'cachebus-schema-cache');
  const cached = join(cacheDir, `grafana-dashboard-${version}.json`);
  if (existsSync(cached)) return JSON.parse(readFileSync(cached, 'utf8')) as object;
  const { createGenerator } = await import('ts-json-schema-generator');
  const schema = createGenerator({
    path: join(dirname(pkgPath), 'dist/types/raw/dashboard/x/types.gen.d.ts'),
    type: 'Dashboard',
    skipTypeCheck: true,
    expose: 'export',
    topRef: true,
    additionalProperties: false,
  }).createSchema('Dashboard');
  mkdirSync(cacheDir, { recursive: true });
  writeFileSync(`${cached}.${process.pid}`, JSON.stringify(schema));
  // rename is atomic: a concurrent run never reads half a file
  (await import('node:fs')).renameSync(`${cached}.${process.pid}`, cached);
  return schema;
}

describe('grafana/dashboards/cachebus.json', () => {
  it("validates against the JSON Schema generated from @grafana/schema's Dashboard type", async () => {
    const schema = await dashboardSchema();
    const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
    const ok = validate(dashboard);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(ok).toBe(true);
    // not vacuous: a misspelt field and a missing gridPos height are rejected
    expect(validate({ ...dashboard, titel: 'x' })).toBe(false);
    const broken = structuredClone(dashboard) as unknown as { panels: { gridPos: Record<string, number> }[] };
    delete broken.panels[1]!.gridPos.h;
    expect(validate(broken)).toBe(false);
  }, 60_000);

  it('uses the provisioned datasource uid everywhere and has the namespace and worker variables', () => {
    const ds = parse(read('grafana/provisioning/datasources/prometheus.yml')) as { datasources: { uid: string; type: string }[] };
    const uid = ds.datasources[0]!.uid;
    expect(ds.datasources[0]!.type).toBe('prometheus');
    for (const p of queryPanels) {
      expect(p.datasource?.uid, p.title).toBe(uid);
      for (const t of p.targets ?? []) expect(t.datasource?.uid, `${p.title} ${t.refId}`).toBe(uid);
    }
    const vars = Object.fromEntries(dashboard.templating.list.map((v) => [v.name, v]));
    expect(Object.keys(vars)).toEqual(['namespace', 'worker']);
    for (const v of Object.values(vars)) {
      expect(v.datasource?.uid).toBe(uid);
      expect(v.includeAll).toBe(true);
      expect(v.allValue).toBe('.*');
    }
    expect(vars.worker!.query).toContain('$namespace');
  });

  it('has the panels operators need, unique ids and no overlapping tiles', () => {
    const titles = queryPanels.map((p) => p.title);
    for (const needed of [
      /^Stale-read rate/, /^Invalidation lag p50 \/ p99$/, /^Hit ratio$/, /^Bus cursor lag$/, /^Gaps and clears$/,
      /^Write-behind queue depth$/, /^Write-behind flush latency/, /^Dead letters$/, /^Outbox backlog$/,
    ]) expect(titles.some((t) => needed.test(t)), String(needed)).toBe(true);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      const g = p.gridPos;
      expect(g.x + g.w, p.title).toBeLessThanOrEqual(24);
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
  });

  it('queries only metrics that cachebus exports, and filters each by the variables', () => {
    const cache = new CacheMetrics({ cluster: false });
    const sidecar = new SidecarMetrics();
    const known = new Set([...cache.names, ...sidecar.registry.getMetricsAsArray().map((m) => m.name)]);
    cache.close();
    for (const p of queryPanels) {
      for (const t of p.targets!) {
        const names = [...t.expr.matchAll(/\b(cachebus_[a-z_]+)\{/g)].map((m) => m[1]!);
        expect(names.length, `${p.title}: ${t.expr}`).toBeGreaterThan(0);
        for (const n of names) {
          const base = n.replace(/_(bucket|sum|count)$/, '');
          expect(known.has(n) || known.has(base), `${p.title}: unknown metric ${n}`).toBe(true);
          const selector = t.expr.slice(t.expr.indexOf(`${n}{`)).split('}')[0]!;
          expect(selector, `${p.title}: ${n} not filtered by namespace`).toContain('namespace=~"$namespace"');
          if (!/^cachebus_(writebehind|outbox)_/.test(n)) expect(selector, `${p.title}: ${n} not filtered by worker`).toContain('worker=~"$worker"');
        }
      }
    }
  });
});

describe('grafana/dashboards/cachebus.json at a glance', () => {
  type Step = { color: string; value: number | null };
  type Full = Panel & {
    description?: string;
    fieldConfig?: { defaults?: { unit?: string; noValue?: string; thresholds?: { steps: Step[] }; mappings?: { type: string; options: Record<string, { text?: string }> }[] } };
  };
  const panels = dashboard.panels as Full[];
  const exprs = (p: Panel): string => (p.targets ?? []).map((t) => t.expr).join('\n');

  it('opens with stat panels with green/red thresholds for serving, cursor lag, gaps, outbox errors and age, dead letters and write-behind pending', () => {
    const firstRow = panels.find((p) => p.type === 'row' && p.gridPos.y > 0)!.gridPos.y;
    const top = panels.filter((p) => p.type === 'stat' && p.gridPos.y < firstRow);
    for (const [what, metric] of [
      ['serving', 'cachebus_servable'], ['cursor lag', 'cachebus_bus_cursor_lag_entries'], ['gaps', 'cachebus_gaps_total'],
      ['outbox errors', 'cachebus_outbox_errors_total'], ['outbox age', 'cachebus_outbox_oldest_pending_age_seconds'],
      ['outbox backlog', 'cachebus_outbox_backlog_rows'], ['dead letters', 'cachebus_writebehind_dead_letters{'],
      ['write-behind pending', 'cachebus_writebehind_pending_rows'], ['write-behind maxPending', 'cachebus_writebehind_max_pending'],
    ] as const) {
      const p = top.find((x) => exprs(x).includes(metric));
      expect(p, `no stat panel at the top for ${what} (${metric})`).toBeDefined();
      const steps = p!.fieldConfig?.defaults?.thresholds?.steps ?? [];
      expect(steps[0], `${p!.title}: the base step`).toEqual({ color: 'green', value: null });
      expect(steps.at(-1)!.color, `${p!.title}: the last step`).toBe('red');
      expect(steps.at(-1)!.value, p!.title).toBeGreaterThan(0);
      expect(p!.description, p!.title).toBeTruthy();
    }
  });

  it('says on every stale-read panel that the sampler is off by default, and shows whether it runs', () => {
    const stale = panels.filter((p) => p.type === 'timeseries' && /cachebus_stale_/.test(exprs(p)));
    expect(stale.length).toBe(3);
    for (const p of stale) {
      expect(p.fieldConfig?.defaults?.noValue, p.title).toMatch(/staleSampleRate/);
      expect(p.description, p.title).toMatch(/staleSampleRate/);
    }
    const sampler = panels.find((p) => p.type === 'stat' && /cachebus_stale_checks_total/.test(exprs(p)))!;
    expect(sampler, 'a stat of the stale-read sampler').toBeDefined();
    expect(exprs(sampler)).toMatch(/or vector\(0\)$/); // 0 rather than "No data" when no cache samples
    const zero = sampler.fieldConfig!.defaults!.mappings!.find((m) => m.type === 'value')!.options['0'];
    expect(zero?.text).toMatch(/staleSampleRate/);
  });

  it('has no timeseries mixing a rate with a count, nor published with received, and no increase over $__rate_interval', () => {
    for (const p of panels.filter((x) => x.type === 'timeseries')) {
      const kinds = new Set(p.targets!.map((t) => (/\b(rate|irate|increase)\(/.test(t.expr) ? 'rate' : 'value')));
      expect(kinds.size, `${p.title} mixes a rate and a count: ${exprs(p)}`).toBe(1);
      if (kinds.has('rate')) expect(['ops', 'reqps', 'percentunit', 's'], `${p.title}: unit of a rate`).toContain(p.fieldConfig?.defaults?.unit);
      expect(exprs(p).includes('cachebus_invalidations_published_total') && exprs(p).includes('cachebus_invalidations_received_total'), p.title).toBe(false);
    }
    for (const p of queryPanels) expect(exprs(p), p.title).not.toMatch(/increase\([^)]*\[\$__rate_interval\]/);
  });
});

describe('grafana/prometheus.yml', () => {
  it.skipIf(!existsSync(PROMTOOL_BIN))('passes promtool check config', () => {
    const r = spawnSync(PROMTOOL_BIN, ['check', 'config', join(ROOT, 'grafana/prometheus.yml')], { encoding: 'utf8' });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('SUCCESS');
  });
});

// ---- every panel against a real Prometheus --------------------------------------------------

const missing = prometheusMissing();
if (missing) console.warn(`grafana.test.ts: SKIPPED the Prometheus panel test: ${missing}`);

const DEMO = join(ROOT, 'dist/demo-workers/main.js');
const RATE_INTERVAL = '10s';
/** Grafana's `$__range` (the dashboard's time range) in this test: a few minutes. */
const RANGE = '5m';

/** Grafana's substitution of a variable's value into a regex matcher (=~), as the Prometheus datasource does. */
function regexValue(v: string): string {
  return v === '.*' ? v : v.replace(/[\\^$*+?.()|[\]{}]/g, '\\\\$&');
}

function substitute(expr: string, vars: { namespace: string; worker: string }): string {
  return expr
    .replaceAll('$__rate_interval', RATE_INTERVAL)
    .replaceAll('$__range', RANGE)
    .replaceAll('$namespace', regexValue(vars.namespace))
    .replaceAll('$worker', regexValue(vars.worker));
}

const hasData = (r: PromResult[]): boolean => r.some((s) => Number.isFinite(Number(s.value[1])));

/** `label_values(match, label)` of a variable, through Prometheus' label values API (as Grafana does). */
async function variableValues(prom: TestPrometheus, v: Variable, vars: Record<string, string>): Promise<string[]> {
  const m = /^label_values\((.*),\s*([a-z_]+)\)$/.exec(v.query);
  if (!m) throw new Error(`variable ${v.name}: unsupported query ${v.query}`);
  let match = m[1]!;
  for (const [k, val] of Object.entries(vars)) match = match.replaceAll(`$${k}`, regexValue(val));
  return prom.labelValues(m[2]!, match);
}

describe.skipIf(missing !== undefined)('every panel query against a real Prometheus', () => {
  let prom: TestPrometheus;
  let app: MetricsApp;
  let sidecar: MetricsApp;
  let schema: TestSchema;
  let demo: ChildProcess | undefined;
  let demoLog = '';
  let jobs = 0;
  const prefix = randomPrefix();

  beforeAll(async () => {
    app = await MetricsApp.start({ redis: REDIS_URL, namespace: 'fixture', prefix, workers: 2, load: true });
    schema = await TestSchema.create();
    sidecar = await MetricsApp.start({ redis: REDIS_URL, database: schema.url, namespace: 'fixture', prefix }, 'metrics-sidecar');
    const targets: Record<string, string[]> = {
      'cachebus-fixture': [`127.0.0.1:${app.port}`],
      'cachebus-sidecar': [`127.0.0.1:${sidecar.port}`],
    };
    if (existsSync(DEMO)) {
      const port = await freePort();
      demo = spawn(process.execPath, [DEMO, '--metrics-port', String(port), '--scenario', 'bus-on', '--duration', '120s',
        '--workers', '2', '--threads', '1', '--concurrency', '2', '--products', '50'], { stdio: ['ignore', 'pipe', 'pipe'] });
      for (const s of [demo.stdout!, demo.stderr!]) s.on('data', (d: Buffer) => { demoLog = (demoLog + d.toString()).slice(-4000); });
      await until(async () => {
        if (demo!.exitCode !== null) throw new Error(`the demo exited with ${demo!.exitCode}: ${demoLog}`);
        return (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).includes('cachebus_hits_total{');
      }, 60_000, 'the demo to serve cache metrics');
      targets['cachebus-demo'] = [`127.0.0.1:${port}`];
    } else {
      console.warn(`grafana.test.ts: ${DEMO} not built: panels are checked against the fixture only`);
    }
    prom = await TestPrometheus.start(targets);
    jobs = Object.keys(targets).length;
  }, 120_000);

  afterAll(async () => {
    await prom?.stop();
    if (demo && demo.exitCode === null && demo.signalCode === null) {
      const exited = new Promise((r) => demo!.once('exit', r));
      demo.kill('SIGINT'); // the demo cleans its schema and keys up on SIGINT
      const timer = setTimeout(() => demo!.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await app?.stop();
    await sidecar?.stop();
    await schema?.drop();
    await cleanupPrefix(prefix);
  }, 60_000);

  it('the variables list the scraped namespaces and workers, and every panel returns data', async () => {
    const [nsVar, workerVar] = dashboard.templating.list;
    const namespaces = await until(async () => {
      const v = await variableValues(prom, nsVar!, {});
      return v.includes('fixture') && (demo === undefined || v.some((n) => n !== 'fixture')) ? v : undefined;
    }, 30_000, 'namespace variable values');
    const workers = await until(async () => {
      const v = await variableValues(prom, workerVar!, { namespace: 'fixture' });
      // the app's two workers (the cases below pick one), and the sidecar fixture's writer (maxPending only)
      return v.length === 3 ? v.filter((w) => w !== 'fixture-writer') : undefined;
    }, 30_000, 'worker variable values');

    // Every target up and scraped a few times before deciding what is exported.
    await until(async () => {
      const up = await prom.query('up == 1');
      const scrapes = await prom.query('min(count_over_time(up[1m]))');
      return up.length === jobs && Number(scrapes[0]?.value[1] ?? 0) >= 3;
    }, 30_000, 'every target to be scraped');

    // Panels whose metrics no scraped target exports are skipped, each with the reason.
    const exported = new Set((await prom.query('count by (__name__) ({__name__=~"cachebus_.+"})')).map((r) => r.metric.__name__!));
    const base = (n: string): string => n.replace(/_(bucket|sum|count)$/, '');
    const metricsOf = (p: Panel): string[] => [...new Set(p.targets!.flatMap((t) => [...t.expr.matchAll(/\b(cachebus_[a-z_]+)\{/g)].map((m) => m[1]!)))];
    const skipped = new Map<string, string>();
    for (const p of queryPanels) {
      const absent = metricsOf(p).filter((n) => !exported.has(n) && !exported.has(`${base(n)}_bucket`) && !exported.has(base(n)));
      if (absent.length > 0) skipped.set(p.title, `no scraped target exports ${absent.join(', ')}`);
    }

    // Every other panel, every target, with the variables substituted: data for each case.
    const cases = [
      { namespace: 'fixture', worker: '.*' },
      { namespace: 'fixture', worker: workers[0]! },
      { namespace: '.*', worker: '.*' },
    ];
    const demoNs = namespaces.find((n) => n !== 'fixture');
    const pending = new Map<string, string>();
    for (const p of queryPanels) {
      if (skipped.has(p.title)) continue;
      for (const vars of cases) for (const t of p.targets!) pending.set(`${p.title} [${t.refId}] ${JSON.stringify(vars)}`, substitute(t.expr, vars));
    }
    const total = pending.size;
    for (const q of new Set(pending.values())) await prom.query(q); // a PromQL error fails here, with its message
    const run = async (): Promise<boolean> => { // re-asks only the queries that had no data yet
      for (const [k, q] of [...pending]) if (hasData(await prom.query(q))) pending.delete(k);
      return pending.size === 0;
    };
    try {
      await until(run, 60_000, 'every panel to return data');
    } catch {
      throw new Error(`panels without data:\n${[...pending].map(([k, q]) => `  ${k}: ${q}`).join('\n')}`);
    }

    // The demo on its own: which panels it feeds (its namespace), and why the others are empty.
    const demoReport: string[] = [];
    if (demoNs !== undefined) {
      const demoMetrics = new Set((await prom.query(`count by (__name__) ({__name__=~"cachebus_.+", namespace="${demoNs}"})`)).map((r) => r.metric.__name__!));
      for (const p of queryPanels) {
        if (skipped.has(p.title)) continue;
        const absent = metricsOf(p).filter((n) => !demoMetrics.has(n) && !demoMetrics.has(`${base(n)}_bucket`) && !demoMetrics.has(base(n)));
        const data = (await Promise.all(p.targets!.map((t) => prom.query(substitute(t.expr, { namespace: demoNs, worker: '.*' }))))).some(hasData);
        if (absent.length > 0) demoReport.push(`  demo: "${p.title}" not fed by the demo: it exports no ${absent.join(', ')}`);
        else if (!data) demoReport.push(`  demo: "${p.title}" has no data yet for the demo (its series exist)`);
        else demoReport.push(`  demo: "${p.title}" ok`);
      }
      // The demo's cache panels that it does feed must return data.
      expect(demoReport.filter((l) => l.endsWith('ok')).length).toBeGreaterThanOrEqual(10);
    }
    console.log([
      `grafana.test.ts: ${queryPanels.length - skipped.size}/${queryPanels.length} panels (${total} queries) return data for ${cases.length} variable settings`,
      ...[...skipped].map(([title, why]) => `  SKIPPED "${title}": ${why}`),
      ...demoReport,
    ].join('\n'));
  }, 150_000);
});
