/**
 * `npm run bench` / `cachebus bench [name...] [--json] [--smoke]`: runs the six
 * benchmarks (or the named ones, which may include the extra ones other work added) and prints ONE table, or with --json `{ "benchmarks": [ row, ... ] }`, one
 * row per benchmark × baseline pair (bench/README.md describes each). Progress goes to
 * stderr. Exit code 1 when a benchmark failed to run; missed targets are reported, not fatal.
 */
import { existsSync, realpathSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parse, UsageError } from '../cli/args.js';
import { busThroughput } from './bus-throughput.js';
import {
  formatTable, machine, redisVersion, unavailable, type BenchContext, type Benchmark, type Row,
} from './harness.js';
import { hitRatio } from './hit-ratio.js';
import { localHit } from './local-hit.js';
import { memory } from './memory.js';
import { propagation } from './propagation.js';

/**
 * A benchmark that lives in a module owned by other work, wired in when that module exists
 * and exports a `Benchmark` (`exportName`, or `benchmark`); until then `notYet` rows say so.
 */
function external(name: string, summary: string, exportName: string, notYet: (why: string) => Row[]): Benchmark {
  return {
    name,
    summary,
    async run(ctx: BenchContext): Promise<Row[]> {
      const file = fileURLToPath(new URL(`./${name}.js`, import.meta.url));
      if (!existsSync(file)) return notYet(`bench/${name}.ts not built yet`);
      const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
      const b = (mod[exportName] ?? mod.benchmark) as Benchmark | undefined;
      if (b === undefined || typeof b.run !== 'function') return notYet(`bench/${name}.ts exports no Benchmark`);
      return b.run(ctx);
    },
  };
}

/** Benchmark 4 lives in bench/write-behind.ts, owned by the write-behind work (issue 4). */
const writeBehind = external(
  'write-behind',
  'write() ack latency and flush rows/s into Postgres vs raw batched upsert and write-through',
  'writeBehindBenchmark',
  (why) => [
    unavailable('write-behind', 'write() ack latency p50', 'µs', 'raw upsert', why),
    unavailable('write-behind', 'flush rows/s', 'rows/s', 'raw batched upsert (floor)', why, { ratioMin: 0.7 }),
    unavailable('write-behind', 'flush rows/s', 'rows/s', 'row-by-row write-through', why, { ratioMin: 10 }),
  ],
);

/** Every benchmark of `npm run bench`, in the order they run. */
export const benchmarks: readonly Benchmark[] = [localHit, propagation, busThroughput, writeBehind, memory, hitRatio];

/** Further benchmarks other work added to bench/: run only when named (`cachebus bench outbox`). */
export const extraBenchmarks: readonly Benchmark[] = [
  external('dependencies', 'invalidating a key with 10k transitive dependents, expanded at readers vs at the publisher', 'dependenciesBenchmark',
    (why) => [unavailable('dependencies', 'benchmark', '-', '-', why)]),
  external('outbox', 'trigger → outbox → sidecar → drop latency, drain throughput, trigger overhead', 'outboxBenchmark',
    (why) => [unavailable('outbox', 'benchmark', '-', '-', why)]),
];

export interface RunOptions {
  /** Names to run; all when empty. */
  readonly names?: readonly string[];
  /** Tiny sizes and durations (CI smoke). @defaultValue false */
  readonly smoke?: boolean;
  /** @defaultValue `process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'` */
  readonly redisUrl?: string;
  /** Progress messages. @defaultValue writes to stderr */
  readonly log?: (message: string) => void;
}

export interface RunResult {
  readonly rows: Row[];
  /** Benchmarks that threw, with the error. */
  readonly failed: { name: string; error: string }[];
}

/** Runs the benchmarks one after another; a benchmark that throws yields a failure row and the rest still run. */
export async function runBenchmarks(opts: RunOptions = {}): Promise<RunResult> {
  const names = opts.names ?? [];
  const all = [...benchmarks, ...extraBenchmarks];
  const unknown = names.filter((n) => !all.some((b) => b.name === n));
  if (unknown.length > 0) {
    throw new UsageError(`unknown benchmark ${unknown.join(', ')} (known: ${all.map((b) => b.name).join(', ')})`);
  }
  const log = opts.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const ctx: BenchContext = {
    smoke: opts.smoke ?? false,
    redisUrl: opts.redisUrl ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    log,
  };
  const rows: Row[] = [];
  const failed: { name: string; error: string }[] = [];
  const chosen = names.length > 0 ? all.filter((b) => names.includes(b.name)) : benchmarks;
  for (const b of chosen) {
    const t0 = Date.now();
    log(`== ${b.name}: ${b.summary}`);
    try {
      rows.push(...(await b.run(ctx)));
    } catch (err) {
      const error = String((err as Error)?.message ?? err);
      failed.push({ name: b.name, error });
      rows.push(unavailable(b.name, 'benchmark', '-', '-', `failed: ${error}`));
    }
    log(`== ${b.name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  return { rows, failed };
}

export const usage = `cachebus bench [NAME...] [--json] [--smoke] [--redis URL] [--list]
  Runs the benchmarks (all, or the named ones) and prints one table of cachebus vs its
  baselines measured in the same run, with ratios and targets. Progress goes to stderr.
    --json    print { "benchmarks": [ { name, metric, unit, value, baseline, baselineValue, ratio, target, met } ] }
    --smoke   tiny sizes and durations: checks the harness, measures nothing meaningful
    --redis   Redis URL (default REDIS_URL or redis://127.0.0.1:6379); random key prefixes, cleaned up
    --list    list the benchmarks and exit
  Benchmarks: ${benchmarks.map((b) => b.name).join(', ')}; by name only: ${extraBenchmarks.map((b) => b.name).join(', ')}`;

/** The command: parses argv, runs, prints. Returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    json: { type: 'boolean' },
    smoke: { type: 'boolean' },
    list: { type: 'boolean' },
    redis: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (values.list) {
    for (const b of benchmarks) console.log(`${b.name.padEnd(16)} ${b.summary}`);
    for (const b of extraBenchmarks) console.log(`${b.name.padEnd(16)} (by name only) ${b.summary}`);
    return 0;
  }
  const redisUrl = values.redis ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const where = `${machine()}, Redis ${await redisVersion(redisUrl)}`;
  process.stderr.write(`cachebus bench on ${where}${values.smoke ? ' (SMOKE: figures are meaningless)' : ''}\n`);
  const started = Date.now();
  const { rows, failed } = await runBenchmarks({ names: positionals, smoke: values.smoke ?? false, redisUrl });
  if (values.json) {
    console.log(JSON.stringify({ benchmarks: rows }, null, 2));
  } else {
    console.log(`machine: ${where}; ${((Date.now() - started) / 1000).toFixed(0)} s${values.smoke ? '; SMOKE run' : ''}`);
    console.log(formatTable(rows));
    const missed = rows.filter((r) => r.met === false);
    if (missed.length > 0) console.log(`\ntargets missed: ${missed.length} (see bench/README.md for the profiles and what would close them)`);
  }
  for (const f of failed) process.stderr.write(`benchmark ${f.name} failed: ${f.error}\n`);
  return failed.length > 0 ? 1 : 0;
}

const invoked = process.argv[1];
if (invoked !== undefined && import.meta.url === pathToFileURL(realpathSync(invoked)).href) {
  main(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; },
    (err: unknown) => {
      if (err instanceof UsageError) {
        console.error(`bench: ${err.message}\n\n${usage}`);
        process.exitCode = 2;
      } else {
        console.error(`bench: ${(err as Error)?.stack ?? err}`);
        process.exitCode = 1;
      }
    },
  );
}
