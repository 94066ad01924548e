import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { makeSchedule, DEFAULT_FAULTS } from '../demo-workers/torture/schedule.js';
import { check } from '../demo-workers/torture/checker.js';
import { History } from '../demo-workers/torture/history.js';
import { DATABASE_URL } from './helpers/pg.js';

const CLI = fileURLToPath(new URL('../dist/cli/cachebus.js', import.meta.url));

interface Run { code: number | null; stdout: string; stderr: string }

/** The compiled `cachebus torture` as a real child process (it forks its workers, sidecar and redis-server). */
function torture(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'torture', '--json', ...args], {
      env: { ...process.env, DATABASE_URL }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`torture timed out\n${stderr}`)); }, 170_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

const KEYS = ['seed', 'seconds', 'faults', 'reads', 'writes', 'violations', 'staleWithinBound'];
const VIOLATIONS = ['staleBeyondBound', 'lostWrites', 'overtakenWrites', 'undetectedGaps', 'crashes', 'badMetrics'];

/** Whether the schema a run printed (`Postgres schema <name>`) is still there. */
async function schemaLeft(stderr: string): Promise<boolean> {
  const schema = /Postgres schema (\S+),/.exec(stderr)?.[1];
  expect(schema).toBeDefined();
  const db = new pg.Client({ connectionString: DATABASE_URL });
  await db.connect();
  try {
    return ((await db.query(`SELECT 1 FROM pg_namespace WHERE nspname = $1`, [schema])).rowCount ?? 0) > 0;
  } finally {
    await db.end();
  }
}

describe('torture schedule', () => {
  it('the same seed replays the same schedule; another seed gives another', () => {
    const a = makeSchedule(42, 60, DEFAULT_FAULTS, 3);
    expect(makeSchedule(42, 60, DEFAULT_FAULTS, 3)).toEqual(a);
    expect(makeSchedule(43, 60, DEFAULT_FAULTS, 3)).not.toEqual(a);
    expect(a.length).toBeGreaterThan(15);
    expect(a.every((f) => f.at >= 1_000 && f.at < 58_000)).toBe(true);
  });
});

describe('torture checker', () => {
  const w = (id: number, v: number, end: number, how = 'sql') => ({ worker: 0, id, v, how, start: end - 5, end, acked: true });
  const r = (id: number, v: number, start: number) => ({ worker: 1, pid: 1, cache: 0, id, v, hit: true, start, end: start + 1 });

  it('counts a read stale beyond the bound, within it, and not at all, exactly', () => {
    const h = new History();
    h.write(w(1, 2, 1_000));
    h.read(r(1, 1, 999)); // started before the ack: not stale
    h.read(r(1, 1, 1_500)); // 500 ms stale: within a 1000 ms bound
    h.read(r(1, 1, 2_100)); // 1100 ms: beyond
    h.read(r(1, 2, 5_000)); // fresh
    const v = check({ history: h, boundMs: 1_000, finalVersions: new Map([[1, 2]]), regressions: [], gapFailures: [], baseline: new Map() });
    expect(v.staleWithinBound).toEqual({ count: 1, p99Ms: 500 });
    expect(v.staleBeyondBound.map((s) => s.ageMs)).toEqual([1_100]);
    expect(v.lostWrites).toEqual([]);
    expect(v.ok).toBe(false);
  });

  it('an acknowledged write missing from Postgres is lost; an unacknowledged one is not', () => {
    const h = new History();
    h.write(w(3, 10, 100, 'write-behind'));
    h.write({ ...w(3, 11, 200, 'write-behind'), acked: false });
    const v = check({ history: h, boundMs: 1_000, finalVersions: new Map([[3, 9]]), regressions: [], gapFailures: [], baseline: new Map() });
    expect(v.lostWrites.map((l) => [l.id, l.expected.v, l.got])).toEqual([[3, 10, 9]]);
    const ok = check({ history: h, boundMs: 1_000, finalVersions: new Map([[3, 10]]), regressions: [], gapFailures: [], baseline: new Map() });
    expect(ok.ok).toBe(true);
  });
});

describe('cachebus torture (real processes, real faults)', () => {
  it('a 25 s run with a fixed seed: faults ran, every check passed, JSON as specified', async () => {
    const run = await torture(['--seconds', '25', '--seed', '1234']);
    const out = JSON.parse(run.stdout) as Record<string, any>;
    expect(Object.keys(out).sort()).toEqual([...KEYS].sort());
    expect(Object.keys(out.violations).sort()).toEqual([...VIOLATIONS].sort());
    expect(Object.keys(out.staleWithinBound).sort()).toEqual(['count', 'p99Ms']);
    expect(out.seed).toBe(1234);
    expect(out.seconds).toBe(25);
    expect(out.reads).toBeGreaterThan(50);
    expect(out.writes).toBeGreaterThan(20);
    const ran = Object.values(out.faults as Record<string, number>).reduce((a, b) => a + b, 0);
    expect(ran).toBeGreaterThan(5);
    expect(run.stderr).toMatch(/seed 1234/);
    expect(out.violations, run.stderr).toEqual({ staleBeyondBound: 0, lostWrites: 0, overtakenWrites: 0, undetectedGaps: 0, crashes: 0, badMetrics: 0 });
    expect(run.code).toBe(0);
    expect(await schemaLeft(run.stderr)).toBe(false);
  }, 180_000);

  it('a broken build is caught: writes that skip their invalidation show up as stale reads beyond the bound', async () => {
    const run = await torture(['--seconds', '15', '--seed', '7', '--faults', 'none', '--mutation', 'no-publish']);
    const out = JSON.parse(run.stdout) as { violations: Record<string, number> };
    expect(out.violations.staleBeyondBound).toBeGreaterThan(0);
    expect(run.stderr).toMatch(/STALE beyond 2000 ms: w\d read row \d+/);
    expect(run.code).toBe(1);
  }, 180_000);
});
