import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './redis.js';
import { until } from './wait.js';

// ---- the text exposition format -----------------------------------------------------------

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Exposition {
  readonly samples: Sample[];
  /** `# TYPE` of each metric family. */
  readonly types: Map<string, string>;
  /** `# HELP` of each metric family. */
  readonly help: Map<string, string>;
}

const LABEL_RE = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parses Prometheus text (version 0.0.4): enough for tests, strict on what it reads. */
export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# TYPE ')) {
      const [name, type] = line.slice(7).split(' ');
      types.set(name!, type!);
    } else if (line.startsWith('# HELP ')) {
      const i = line.indexOf(' ', 7);
      help.set(line.slice(7, i), line.slice(i + 1));
    } else if (!line.startsWith('#')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( \d+)?$/.exec(line);
      if (!m) throw new Error(`unparseable exposition line: ${line}`);
      const labels: Record<string, string> = {};
      for (const l of (m[3] ?? '').matchAll(LABEL_RE)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      samples.push({ name: m[1]!, labels, value: Number(m[4]) });
    }
  }
  return { samples, types, help };
}

/** The value of the one sample matching name and labels (a subset); throws when none or several match. */
export function value(e: Exposition, name: string, labels: Record<string, string> = {}): number {
  const found = e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name}${JSON.stringify(labels)}`);
  return found[0]!.value;
}

/** Fetches and parses a /metrics URL (on loopback). */
export async function scrape(url: string): Promise<Exposition> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return parseExposition(await res.text());
}

// ---- a real Prometheus server ---------------------------------------------------------------

export const PROMETHEUS_BIN = process.env.PROMETHEUS_BIN ?? '/usr/bin/prometheus';
export const PROMTOOL_BIN = process.env.PROMTOOL_BIN ?? '/usr/bin/promtool';

/** Why the Prometheus binary cannot be used here, or undefined when it can. */
export function prometheusMissing(): string | undefined {
  if (!existsSync(PROMETHEUS_BIN)) return `${PROMETHEUS_BIN} not found (apt-get install prometheus; or set PROMETHEUS_BIN)`;
  const r = spawnSync(PROMETHEUS_BIN, ['--version'], { encoding: 'utf8' });
  if (r.status !== 0) return `${PROMETHEUS_BIN} --version failed: ${r.stderr || r.error}`;
  return undefined;
}

export interface PromResult {
  readonly metric: Record<string, string>;
  readonly value: [number, string];
}

export interface PromAlert {
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
  readonly state: 'pending' | 'firing' | 'inactive';
  readonly activeAt?: string;
  readonly value: string;
}

export interface PromRule {
  readonly name: string;
  readonly query: string;
  readonly health: string;
  readonly lastError?: string;
  readonly lastEvaluation: string;
  readonly state?: string;
}

/**
 * A Prometheus server owned by one test: a free loopback port, a temporary storage dir, a
 * generated config scraping loopback targets every second. Stopped by PID.
 */
export class TestPrometheus {
  readonly port: number;
  readonly dir: string;
  readonly #proc: ChildProcess;
  #log = '';

  private constructor(port: number, dir: string, proc: ChildProcess) {
    this.port = port;
    this.dir = dir;
    this.#proc = proc;
    proc.stderr?.on('data', (d: Buffer) => { this.#log = (this.#log + d.toString()).slice(-4000); });
  }

  /**
   * `targets`: job name → `127.0.0.1:port` addresses. `ruleFiles`: rule files to load (absolute
   * paths), evaluated every `scrapeIntervalSeconds`.
   */
  static async start(targets: Record<string, string[]>, scrapeIntervalSeconds = 1, ruleFiles: readonly string[] = []): Promise<TestPrometheus> {
    for (const list of Object.values(targets)) {
      for (const t of list) if (!/^127\.\d+\.\d+\.\d+:\d+$/.test(t)) throw new Error(`target ${t} is not on loopback`);
    }
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'cachebus-prom-'));
    const jobs = Object.entries(targets).map(([job, list]) =>
      `  - job_name: ${JSON.stringify(job)}\n    static_configs:\n      - targets: ${JSON.stringify(list)}\n`).join('');
    writeFileSync(join(dir, 'prometheus.yml'),
      `global:\n  scrape_interval: ${scrapeIntervalSeconds}s\n  scrape_timeout: ${scrapeIntervalSeconds}s\n  evaluation_interval: ${scrapeIntervalSeconds}s\n`
      + `rule_files: ${JSON.stringify(ruleFiles)}\nscrape_configs:\n${jobs}`);
    const proc = spawn(PROMETHEUS_BIN, [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    const p = new TestPrometheus(port, dir, proc);
    try {
      await until(async () => {
        if (proc.exitCode !== null) throw new Error(`prometheus exited with ${proc.exitCode}: ${p.#log}`);
        return (await fetch(`${p.url}/-/ready`)).status === 200;
      }, 30_000, `prometheus on port ${port}`);
    } catch (err) {
      await p.stop();
      throw err;
    }
    return p;
  }

  get url(): string { return `http://127.0.0.1:${this.port}`; }
  get pid(): number | undefined { return this.#proc.pid; }

  /** An instant query; rejects on a PromQL error (with Prometheus' message). */
  async query(promql: string): Promise<PromResult[]> {
    const res = await fetch(`${this.url}/api/v1/query?${new URLSearchParams({ query: promql })}`);
    const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: PromResult[] } };
    if (body.status !== 'success') throw new Error(`PromQL error in ${promql}: ${body.error}`);
    if (body.data!.resultType !== 'vector') throw new Error(`expected a vector from ${promql}, got ${body.data!.resultType}`);
    return body.data!.result;
  }

  /** Values of a label over series matching `match` (what Grafana's `label_values()` does). */
  async labelValues(label: string, match: string): Promise<string[]> {
    const res = await fetch(`${this.url}/api/v1/label/${label}/values?${new URLSearchParams({ 'match[]': match })}`);
    const body = (await res.json()) as { status: string; data: string[]; error?: string };
    if (body.status !== 'success') throw new Error(`label values ${label} ${match}: ${body.error}`);
    return body.data;
  }

  /** Alerts pending or firing now (`/api/v1/alerts`). */
  async alerts(): Promise<PromAlert[]> {
    const res = await fetch(`${this.url}/api/v1/alerts`);
    const body = (await res.json()) as { status: string; error?: string; data?: { alerts: PromAlert[] } };
    if (body.status !== 'success') throw new Error(`alerts: ${body.error}`);
    return body.data!.alerts;
  }

  /** Alerting rules as loaded, with their health and last evaluation (`/api/v1/rules?type=alert`). */
  async alertRules(): Promise<PromRule[]> {
    const res = await fetch(`${this.url}/api/v1/rules?type=alert`);
    const body = (await res.json()) as { status: string; error?: string; data?: { groups: { rules: PromRule[] }[] } };
    if (body.status !== 'success') throw new Error(`rules: ${body.error}`);
    return body.data!.groups.flatMap((g) => g.rules);
  }

  /** SIGTERM, SIGKILL if it lingers (by PID), then removes the storage dir. */
  async stop(): Promise<void> {
    const proc = this.#proc;
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- the metrics app fixture ----------------------------------------------------------------

/**
 * A metrics fixture in its own process, answering `{ event: 'ready', payload: { port } }`:
 * test/fixtures/metrics-cluster.ts (a cluster primary serving aggregated /metrics) by default,
 * or test/fixtures/metrics-sidecar.ts (a sidecar with outbox relay, flusher and SidecarMetrics).
 */
export class MetricsApp {
  readonly child: ChildProcess;
  readonly port: number;

  private constructor(child: ChildProcess, port: number) {
    this.child = child;
    this.port = port;
  }

  static async start(options: object, fixture: 'metrics-cluster' | 'metrics-sidecar' = 'metrics-cluster', timeoutMs = 30_000): Promise<MetricsApp> {
    const script = fileURLToPath(new URL(`../../dist/test/fixtures/${fixture}.js`, import.meta.url));
    const child = fork(script, [JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${fixture} did not start in time`)), timeoutMs);
        child.on('message', (m: { event?: string; payload?: { port: number } | string }) => {
          if (m.event === 'ready') { clearTimeout(timer); resolve((m.payload as { port: number }).port); }
          if (m.event === 'fatal') { clearTimeout(timer); reject(new Error(`${fixture} failed: ${String(m.payload)}`)); }
        });
        child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${fixture} exited with ${code}`)); });
      });
      return new MetricsApp(child, port);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
  }

  get metricsUrl(): string { return `http://127.0.0.1:${this.port}/metrics`; }

  /** Asks the fixture to stop (a primary stops its workers first); SIGKILL by PID after 5 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.send('stop');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}
