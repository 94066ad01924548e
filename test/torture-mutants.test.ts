/**
 * Issue 17: "a deliberately broken build is caught by torture within 60 seconds". Each mutant
 * is the compiled library with one guard patched out (test/helpers/mutants.ts: no test hook in
 * the library), run under `cachebus torture` with a fixed seed and the faults that expose it;
 * the unbroken build, same seed and load, with all those faults, must pass. Each run takes about a minute.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DATABASE_URL } from './helpers/pg.js';
import { mutantBuild, type Mutant } from './helpers/mutants.js';

const CLI = fileURLToPath(new URL('../dist/cli/cachebus.js', import.meta.url));

interface Summary { violations: Record<string, number>; faults: Record<string, number>; reads: number; writes: number }
interface Run { code: number | null; out: Summary; stderr: string }

function torture(cli: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, 'torture', '--json', ...args], { env: { ...process.env, DATABASE_URL }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`torture timed out\n${stderr}`)); }, 200_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      try {
        resolve({ code, out: JSON.parse(stdout) as Summary, stderr });
      } catch {
        reject(new Error(`torture printed no JSON (exit ${code})\n${stderr}`));
      }
    });
  });
}

interface Case {
  readonly mutant: Mutant;
  /** The faults that expose the mutant. */
  readonly faults: readonly string[];
  /** The violations the mutant must cause (at least one of them above 0). */
  readonly caughtBy: readonly string[];
  /** How the report names it. */
  readonly report: RegExp;
  /** Run length (s), at most the 60; 30 unless the mutant needs a rarer interleaving. */
  readonly seconds?: number;
}

/** Seed and load of every run here (length: kSeconds, or the case's own, never past 60 s); the faults vary. */
const COMMON = ['--seed', '17', '--loops', '8'];
const kSeconds = 30;

const CASES: Case[] = [
  {
    // The reader never reports a gap: a deleted stream, or entries trimmed or deleted past a frozen
    // or stalled reader (or hub), go unnoticed and the caches keep serving what the lost invalidations dropped.
    mutant: 'no-gap-check',
    faults: ['stream-del', 'stream-trim', 'stream-xdel', 'stop-worker', 'stall-redis', 'stop-hub'],
    caughtBy: ['undetectedGaps', 'staleBeyondBound'],
    report: /UNDETECTED GAP|STALE beyond/,
  },
  {
    // The write-behind upsert overwrites whatever Postgres holds: under pg-jitter, one sidecar's
    // upsert of an older version reaches Postgres after the other's upsert of a newer one.
    mutant: 'no-version-guard',
    faults: ['pg-jitter'],
    // An older upsert must overtake a newer one of the same row across the two sidecars: 30 s
    // missed it once in CI (0 overtaken in 636 writes); 60 s, the bound, doubles the chances.
    seconds: 60,
    caughtBy: ['overtakenWrites', 'lostWrites'],
    report: /OVERTAKEN|LOST/,
  },
];

const NONE = { staleBeyondBound: 0, lostWrites: 0, overtakenWrites: 0, undetectedGaps: 0, crashes: 0, badMetrics: 0 };

describe('torture catches a deliberately broken build (dist/ patched in a temp copy)', () => {
  for (const c of CASES) {
    it(`${c.mutant} is caught within ${c.seconds ?? kSeconds} s (${c.caughtBy.join(' or ')})`, async () => {
      const build = mutantBuild(c.mutant); // throws if a patch no longer applies
      try {
        const run = await torture(build.cli, [...COMMON, '--seconds', String(c.seconds ?? kSeconds), '--faults', c.faults.join(',')]);
        const caught = c.caughtBy.reduce((n, k) => n + (run.out.violations[k] ?? 0), 0);
        expect(caught, `${c.mutant} was not caught:\n${run.stderr}`).toBeGreaterThan(0);
        expect(run.stderr).toMatch(c.report);
        expect(run.code).toBe(1);
      } finally {
        build.dispose();
      }
    }, 240_000);
  }

  it('the unbroken build passes with the same seed, load and every one of those faults', async () => {
    const faults = [...new Set(CASES.flatMap((c) => c.faults))];
    const run = await torture(CLI, [...COMMON, '--seconds', String(kSeconds), '--faults', faults.join(',')]);
    expect(run.out.violations, run.stderr).toEqual(NONE);
    expect(run.code).toBe(0);
    for (const f of faults.filter((x) => x !== 'stop-hub')) expect(run.out.faults[f], `${f} never ran`).toBeGreaterThan(0);
  }, 240_000);
});
