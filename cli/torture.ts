import { parse, UsageError } from './args.js';
import { parseFaults, FAULTS } from '../demo-workers/torture/schedule.js';
import { torture } from '../demo-workers/torture/run.js';

export const usage = `cachebus torture [--seconds 60] [--seed S] [--faults list] [--json]
                 [--workers 3] [--bound-ms 2000] [--loops 4] [--pause-ms 5] [--verbose]
  A nemesis run (docs/torture.md): node:cluster workers read and write one Postgres table through
  every path while a seeded schedule injects faults; a checker verifies every read and write.
  Prints the seed (the same seed replays the same schedule); exits 1 on any violation.
  --faults  comma-separated (default: every fault but redis-wipe; 'all'; 'none'):
            ${FAULTS.join(', ')}
  --json    prints only the summary as JSON on stdout (progress goes to stderr).
  Needs redis-server on PATH (the torture runs its own) and PostgreSQL ($DATABASE_URL or 127.0.0.1:5432).`;

function int(v: string | undefined, name: string, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer ≥ ${min} (got ${v})`);
  return n;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    seconds: { type: 'string' }, seed: { type: 'string' }, faults: { type: 'string' }, json: { type: 'boolean' },
    workers: { type: 'string' }, 'bound-ms': { type: 'string' }, loops: { type: 'string' }, 'pause-ms': { type: 'string' },
    verbose: { type: 'boolean', short: 'v' }, mutation: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  let faults;
  try {
    faults = parseFaults(values.faults);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const json = values.json === true;
  const log = (line: string): void => { (json ? console.error : console.log)(line); };
  const { verdict, summary } = await torture({
    seconds: int(values.seconds, 'seconds', 60, 5), seed: values.seed === undefined ? undefined : int(values.seed, 'seed', 0, 0) >>> 0,
    faults, json, workers: int(values.workers, 'workers', 3, 1), boundMs: int(values['bound-ms'], 'bound-ms', 2_000, 200),
    loops: int(values.loops, 'loops', 4, 1), pauseMs: int(values['pause-ms'], 'pause-ms', 5, 0), verbose: values.verbose === true,
    // Hidden: a deliberately broken workload, for the tests that prove the checker catches it.
    mutation: values.mutation ?? process.env.CACHEBUS_TORTURE_MUTATION ?? '',
  }, log);
  if (json) console.log(JSON.stringify(summary));
  else {
    const v = summary.violations;
    log(`faults: ${Object.entries(summary.faults).map(([f, n]) => `${f} ${n}`).join(', ') || 'none'}`);
    log(`${summary.reads} reads, ${summary.writes} acknowledged writes; stale within bound ${summary.staleWithinBound.count} (p99 ${summary.staleWithinBound.p99Ms ?? '-'} ms)`);
    log(`violations: stale beyond bound ${v.staleBeyondBound}, lost writes ${v.lostWrites}, overtaken writes ${v.overtakenWrites}, undetected gaps ${v.undetectedGaps}, crashes ${v.crashes}, bad metrics ${v.badMetrics}`);
    log(verdict.ok ? `OK (seed ${summary.seed})` : `FAILED (seed ${summary.seed}; replay with --seed ${summary.seed})`);
  }
  // A CLI must end: if a stray handle lingers after cleanup, leave anyway.
  setTimeout(() => process.exit(process.exitCode ?? 0), 3_000).unref();
  return verdict.ok ? 0 : 1;
}
