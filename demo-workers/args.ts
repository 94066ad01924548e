import { parseArgs } from 'node:util';

/** What the demo was asked to do (see `usage`). */
export interface DemoOptions {
  /** HTTP worker processes. @defaultValue 4 */
  readonly workers: number;
  /** piscina threads per worker, each with its own cache. @defaultValue 2 */
  readonly threads: number;
  /** Load time of each scenario, ms. @defaultValue 6_000 */
  readonly durationMs: number;
  /** Scenario names to run, in order; empty means every scenario. */
  readonly scenarios: readonly string[];
  /** A stale read older than this is a failure (except in `bus off`), ms. @defaultValue 1_000 */
  readonly boundMs: number;
  /** Port of /metrics while the demo runs; 0 picks a free one. @defaultValue 9464 */
  readonly metricsPort: number;
  /** Concurrent requests the load driver keeps in flight. @defaultValue 16 */
  readonly concurrency: number;
  /** Products in the table. @defaultValue 200 */
  readonly products: number;
  /** Fraction of operations that are writes. @defaultValue 0.05 */
  readonly writeRatio: number;
  /** Also write the charts and the table to this self-contained HTML file. */
  readonly report: string | undefined;
  readonly json: boolean;
  readonly help: boolean;
}

export const usage = `usage: npm run demo -- [options]      (or: cachebus demo [options])

Reproduces stale per-process caches, then shows them gone. Each scenario is one row.

  --workers N         HTTP worker processes (default 4)
  --threads N         piscina threads per worker, each with its own cache (default 2)
  --duration T        load time per scenario: 6, 6s or 6000ms (default 6s)
  --scenario LIST     comma-separated scenarios to run (default: all), e.g. "bus-off,bus-on"
  --bound-ms N        staleness bound: a stale read older than this fails the row (default 1000)
  --metrics-port N    serve the live page (/) and /metrics here while running; 0 = a free port (default 9464)
  --report FILE.html  also write the charts and the table to one self-contained HTML file (opens offline)
  --concurrency N     requests in flight from the load driver (default 16)
  --products N        rows in the products table (default 200)
  --write-ratio R     fraction of operations that are writes (default 0.05)
  --json              print the results as JSON on stdout (progress still goes to stderr)
  -h, --help          this text

Infrastructure: REDIS_URL / DATABASE_URL when set; else Redis and PostgreSQL on 127.0.0.1;
else a throwaway redis-server from PATH and an in-process PGlite.`;

/** Bad command-line input; printed with the usage, exit code 2. */
export class DemoUsageError extends Error {}

function int(name: string, v: string | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new DemoUsageError(`--${name} must be an integer >= ${min} (got ${v})`);
  return n;
}

/** "8", "8s", "1.5s", "800ms" → ms. */
export function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(v.trim());
  if (!m) throw new DemoUsageError(`--duration must look like 8, 8s or 800ms (got ${v})`);
  const ms = m[2] === 'ms' ? Number(m[1]) : Number(m[1]) * 1000;
  if (ms < 200) throw new DemoUsageError(`--duration must be at least 200ms (got ${v})`);
  return Math.round(ms);
}

export function parseDemoArgs(argv: string[]): DemoOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        workers: { type: 'string' }, threads: { type: 'string' }, duration: { type: 'string' },
        scenario: { type: 'string' }, 'bound-ms': { type: 'string' }, 'metrics-port': { type: 'string' },
        concurrency: { type: 'string' }, products: { type: 'string' }, 'write-ratio': { type: 'string' },
        report: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new DemoUsageError((err as Error).message);
  }
  const s = (k: string): string | undefined => values[k] as string | undefined;
  const writeRatio = s('write-ratio') === undefined ? 0.05 : Number(s('write-ratio'));
  if (!(writeRatio > 0 && writeRatio < 1)) throw new DemoUsageError(`--write-ratio must be between 0 and 1 (got ${s('write-ratio')})`);
  const metricsPort = int('metrics-port', s('metrics-port'), 9464, 0);
  if (metricsPort > 65535) throw new DemoUsageError(`--metrics-port must be a port number (got ${metricsPort})`);
  const report = s('report');
  if (report !== undefined && report.trim() === '') throw new DemoUsageError('--report needs a file name');
  return {
    workers: int('workers', s('workers'), 4, 1),
    threads: int('threads', s('threads'), 2, 1),
    durationMs: s('duration') === undefined ? 6_000 : parseDuration(s('duration')!),
    scenarios: (s('scenario') ?? '').split(',').map((x) => x.trim()).filter(Boolean),
    boundMs: int('bound-ms', s('bound-ms'), 1_000, 10),
    metricsPort,
    concurrency: int('concurrency', s('concurrency'), 16, 1),
    products: int('products', s('products'), 200, 1),
    writeRatio,
    report,
    json: values.json === true,
    help: values.help === true,
  };
}
