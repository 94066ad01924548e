/**
 * Issue 17: "a deliberately broken build is caught by torture within 60 seconds". Each mutant
 * is the compiled library with one guard patched out (test/helpers/mutants.ts: no test hook in
 * the library), run under `cachebus torture` with a fixed seed and the faults that expose it;
 * the unbroken build, same seed, same faults, must pass. Each run takes about a minute.
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
  /** Torture arguments: seed, seconds (≤ 60) and the faults that expose the mutant. */
  readonly args: string[];
  /** The violations the mutant must cause (at least one of them above 0). */
  readonly caughtBy: readonly string[];
  /** How the report names it. */
  readonly report: RegExp;
}

const CASES: Case[] = [
  {
    // The reader never reports a gap: a deleted stream, or entries trimmed or deleted past a frozen
    // or stalled reader, go unnoticed and the caches keep serving entries the lost invalidations dropped.
    mutant: 'no-gap-check',
    args: ['--seconds', '40', '--seed', '17', '--faults', 'stream-del,stream-trim,stream-xdel,stop-worker,stall-redis,stop-hub'],
    caughtBy: ['undetectedGaps', 'staleBeyondBound'],
    report: /UNDETECTED GAP|STALE beyond/,
  },
  {
    // The write-behind upsert overwrites whatever Postgres holds: under pg-jitter, a flusher loop's
    // upsert of an older version reaches Postgres after another loop's upsert of a newer one.
    mutant: 'no-version-guard',
    args: ['--seconds', '40', '--seed', '17', '--faults', 'pg-jitter', '--loops', '8'],
    caughtBy: ['overtakenWrites', 'lostWrites'],
    report: /OVERTAKEN|LOST/,
  },
];

const NONE = { staleBeyondBound: 0, lostWrites: 0, overtakenWrites: 0, undetectedGaps: 0, crashes: 0, badMetrics: 0 };

describe('torture catches a deliberately broken build (dist/ patched in a temp copy)', () => {
  for (const c of CASES) {
    it(`${c.mutant}: caught (${c.caughtBy.join(' or ')}), while the unbroken build passes with the same seed and faults`, async () => {
      const build = mutantBuild(c.mutant); // throws if a patch no longer applies
      let broken: Run;
      try {
        broken = await torture(build.cli, c.args);
      } finally {
        build.dispose();
      }
      const caught = c.caughtBy.reduce((n, k) => n + (broken.out.violations[k] ?? 0), 0);
      expect(caught, `${c.mutant} was not caught:\n${broken.stderr}`).toBeGreaterThan(0);
      expect(broken.stderr).toMatch(c.report);
      expect(broken.code).toBe(1);

      const sound = await torture(CLI, c.args);
      expect(sound.out.violations, sound.stderr).toEqual(NONE);
      expect(sound.code).toBe(0);
      expect(Object.values(sound.out.faults).reduce((a, b) => a + b, 0)).toBeGreaterThan(5);
    }, 420_000);
  }
});
