/**
 * The benchmark harness: the row type every benchmark returns, targets, statistics, the
 * shared cross-process clock, the table printer, Redis prefixes, and forking fixtures.
 *
 * Every benchmark measures cachebus and its baselines in the same run and reports ratios:
 * absolute figures on a shared machine drift, ratios measured side by side drift much less.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { unlinkMatching } from '../bus/scan.js';

/** What a target compares: `value / baselineValue` (ratio) and/or `value` itself. */
export interface Target {
  readonly ratioMin?: number;
  readonly ratioMax?: number;
  readonly valueMin?: number;
  readonly valueMax?: number;
}

/** One benchmark × baseline pair: the JSON row of `--json`, one line of the table. */
export interface Row {
  readonly name: string;
  readonly metric: string;
  readonly unit: string;
  /** cachebus's figure; null when it could not be measured (the metric says why). */
  readonly value: number | null;
  readonly baseline: string;
  readonly baselineValue: number | null;
  /** value / baselineValue. */
  readonly ratio: number | null;
  /** The target in words (`<= 1.5x`, `>= 100000 keys/s`), or null when the row is informational. */
  readonly target: string | null;
  /** Whether the target was met; null without a target or a value. */
  readonly met: boolean | null;
}

export interface BenchContext {
  /** Tiny sizes and durations: checks the harness end to end, measures nothing meaningful. */
  readonly smoke: boolean;
  readonly redisUrl: string;
  /** Progress messages (stderr), so that stdout carries only the table or the JSON. */
  log(message: string): void;
}

export interface Benchmark {
  readonly name: string;
  readonly summary: string;
  run(ctx: BenchContext): Promise<Row[]>;
}

function fmtTarget(t: Target, unit: string): string {
  const parts: string[] = [];
  if (t.ratioMin !== undefined) parts.push(`>= ${t.ratioMin}x`);
  if (t.ratioMax !== undefined) parts.push(`<= ${t.ratioMax}x`);
  if (t.valueMin !== undefined) parts.push(`>= ${t.valueMin} ${unit}`);
  if (t.valueMax !== undefined) parts.push(`<= ${t.valueMax} ${unit}`);
  return parts.join(' and ');
}

const finite = (n: number | null | undefined): n is number => typeof n === 'number' && Number.isFinite(n);

/** Builds a row: computes the ratio and whether the target was met. */
export function row(
  name: string, metric: string, unit: string,
  value: number | null, baseline: string, baselineValue: number | null, target?: Target,
): Row {
  const v = finite(value) ? value : null;
  const b = finite(baselineValue) ? baselineValue : null;
  const ratio = v !== null && b !== null && b !== 0 ? v / b : null;
  let met: boolean | null = null;
  if (target !== undefined && v !== null) {
    const needsRatio = target.ratioMin !== undefined || target.ratioMax !== undefined;
    if (!needsRatio || ratio !== null) {
      met = (target.ratioMin === undefined || ratio! >= target.ratioMin)
        && (target.ratioMax === undefined || ratio! <= target.ratioMax)
        && (target.valueMin === undefined || v >= target.valueMin)
        && (target.valueMax === undefined || v <= target.valueMax);
    }
  }
  return { name, metric, unit, value: v, baseline, baselineValue: b, ratio, target: target ? fmtTarget(target, unit) : null, met };
}

/** A row for a figure that could not be measured; `why` ends up in the metric text. */
export function unavailable(name: string, metric: string, unit: string, baseline: string, why: string, target?: Target): Row {
  return { ...row(name, `${metric} (not available: ${why})`, unit, null, baseline, null, target), target: target ? fmtTarget(target, unit) : null };
}

// ---- statistics ------------------------------------------------------------------------

/** The p-th percentile (0..100) of an ascending array, nearest rank. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function median(xs: readonly number[]): number {
  return percentile(Float64Array.from(xs).sort(), 50);
}

/**
 * Nanoseconds on CLOCK_MONOTONIC. `process.hrtime` reads the system-wide monotonic clock on
 * Linux, so stamps taken in different processes on one machine are directly comparable:
 * that is the shared clock the cross-process latency benchmarks use.
 */
export function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/** A small seeded PRNG (mulberry32), so traces are the same from run to run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- output ----------------------------------------------------------------------------

export function fmtNum(n: number | null): string {
  if (n === null) return '-';
  const a = Math.abs(n);
  if (a >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  if (a >= 100) return n.toFixed(0);
  if (a >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

/** The one table `npm run bench` prints. */
export function formatTable(rows: readonly Row[]): string {
  const head = ['benchmark', 'metric', 'unit', 'cachebus', 'baseline', 'baseline value', 'ratio', 'target', 'met'];
  const body = rows.map((r) => [
    r.name, r.metric, r.unit, fmtNum(r.value), r.baseline, fmtNum(r.baselineValue),
    r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`, r.target ?? '-', r.met === null ? '-' : r.met ? 'yes' : 'NO',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

/** One line naming the machine the figures came from. */
export function machine(): string {
  const c = cpus();
  return `${c.length} x ${c[0]?.model.trim() ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}, ${process.platform}/${process.arch}`;
}

// ---- Redis -----------------------------------------------------------------------------

/**
 * A random key prefix for one benchmark run on the shared Redis: `<root>-<random>`, root from
 * CACHEBUS_BENCH_PREFIX (tests set their own, to check cleanup), else `cbbench`.
 */
export function randomPrefix(root = process.env.CACHEBUS_BENCH_PREFIX || 'cbbench'): string {
  return `${root}-${randomBytes(5).toString('hex')}`;
}

/** Deletes every key under the prefix (SCAN + UNLINK; never FLUSHALL). */
export async function cleanupPrefix(url: string, prefix: string): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    await unlinkMatching(r, `${prefix}*`);
  } finally {
    r.disconnect();
  }
}

/** Redis version of the server at `url` (for the machine line), or 'unreachable'. */
export async function redisVersion(url: string): Promise<string> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => undefined);
  try {
    await r.connect();
    const info = await r.info('server');
    return /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
  } catch {
    return 'unreachable';
  } finally {
    r.disconnect();
  }
}

// ---- child processes -------------------------------------------------------------------

/**
 * Path of a compiled fixture. From dist/ the fixture sits next to this file; when the harness
 * runs from source (vitest), the compiled copy in dist/bench/fixtures/ is used.
 */
export function fixturePath(name: string): string {
  const here = fileURLToPath(new URL(`./fixtures/${name}.js`, import.meta.url));
  if (existsSync(here)) return here;
  return fileURLToPath(new URL(`../dist/bench/fixtures/${name}.js`, import.meta.url));
}

interface Reply { id: number; ok: boolean; value?: unknown; error?: string }
interface EventMsg { event: string; payload?: unknown }

/**
 * A fixture child process driven by request/reply over IPC (see fixtures/rpc.ts). Events the
 * child sends (`{ event, payload }`) go to `onEvent`.
 */
export class ChildRpc {
  readonly child: ChildProcess;
  #next = 1;
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  #exitError: Error | undefined;
  #ready: Promise<void>;
  onEvent: (event: string, payload: unknown) => void = () => undefined;

  constructor(fixture: string, args: string[] = [], execArgv: string[] = []) {
    this.child = fork(fixturePath(fixture), args, {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      // CACHEBUS_BENCH_CHILD_ARGS (space-separated node flags, e.g. --cpu-prof) profiles the children.
      execArgv: [...process.execArgv.filter((a) => !a.startsWith('--expose-gc')), ...execArgv, ...(process.env.CACHEBUS_BENCH_CHILD_ARGS?.split(' ').filter(Boolean) ?? [])],
    });
    let ready!: () => void;
    this.#ready = new Promise<void>((r) => { ready = r; });
    this.child.on('message', (m: Reply | EventMsg) => {
      if ('event' in m && m.event === 'ready') {
        ready();
      } else if ('id' in m) {
        const p = this.#pending.get(m.id);
        this.#pending.delete(m.id);
        if (m.ok) p?.resolve(m.value);
        else p?.reject(new Error(`${fixture}: ${m.error}`));
      } else {
        this.onEvent(m.event, m.payload);
      }
    });
    this.child.on('exit', (code, signal) => {
      this.#exitError = new Error(`${fixture} exited (${signal ?? code})`);
      for (const p of this.#pending.values()) p.reject(this.#exitError);
      this.#pending.clear();
    });
  }

  /** Resolves once the child listens for requests; rejects if it exits first or after timeoutMs. */
  ready(timeoutMs = 30_000): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child not ready after ${timeoutMs} ms`)), timeoutMs);
      this.child.once('exit', (code, signal) => reject(new Error(`child exited (${signal ?? code}) before it was ready`)));
      void this.#ready.then(() => { clearTimeout(timer); resolve(); });
    });
  }

  /** Sends one op; resolves with its reply value, rejects on an error reply, exit or timeout. */
  call<T = unknown>(op: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T> {
    if (this.#exitError) return Promise.reject(this.#exitError);
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`op ${op} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v as T); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.child.send({ id, op, ...args });
    });
  }

  /** Asks the child to exit, then kills it by PID if it has not within the grace period. */
  async stop(graceMs = 3_000): Promise<void> {
    const c = this.child;
    if (c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    if (c.connected) c.send({ id: 0, op: 'exit' });
    const timer = setTimeout(() => c.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
}

/** Resolves when `check()` holds; rejects after `timeoutMs`. Checks every `everyMs`. */
export async function until(check: () => boolean, timeoutMs: number, what: string, everyMs = 2): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Runs one benchmark when its file is the process's entry point (`node dist/bench/<name>.js
 * [--smoke]`): the machine line, then its table on stdout; progress on stderr.
 */
export async function runIfMain(moduleUrl: string, bench: Benchmark): Promise<void> {
  const invoked = process.argv[1];
  if (invoked === undefined || moduleUrl !== pathToFileURL(realpathSync(invoked)).href) return;
  const ctx: BenchContext = {
    smoke: process.argv.includes('--smoke'),
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    log: (m) => console.error(m),
  };
  console.log(machine());
  try {
    console.log(formatTable(await bench.run(ctx)));
  } catch (err) {
    console.error(err);
    process.exitCode = 1;
  }
}
