import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Truth } from '../demo-workers/truth.js';
import { DATABASE_URL } from './helpers/pg.js';
import { freePort, REDIS_URL } from './helpers/redis.js';
import { scanKeys } from '../bus/scan.js';

const MAIN = fileURLToPath(new URL('../dist/demo-workers/main.js', import.meta.url));

interface Row {
  name: string; skipped?: string; reads: number; staleReads: number; staleBeyondBound: number; boundMs: number;
  lagP50Ms: number | null; lagP99Ms: number | null; hitRatio: number; writes: number; ok: boolean;
  gaps: Record<string, number>; notes: string[]; caches: number;
}
interface Report { scenarios: Row[]; ok: boolean; infra: { prefix: string; schema: string } }

interface Run { code: number | null; signal: string | null; stdout: string; stderr: string }

/** Runs the compiled demo as a real child process. `until` may act on the child while it runs. */
function demo(args: string[], env: NodeJS.ProcessEnv = {}, during?: (child: ChildProcess, stderr: () => string) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      env: { ...process.env, DATABASE_URL, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); during?.(child, () => stderr); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`demo timed out\n${stderr}`)); }, 110_000);
    child.on('error', reject);
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
  });
}

let db: pg.Pool;
let redis: Redis;
beforeAll(() => {
  db = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  redis = new Redis(REDIS_URL);
});
afterAll(async () => {
  await db.end();
  redis.disconnect();
});

/** What the demo left behind: its schema and its Redis keys (both must be gone). */
async function leftovers(prefix: string, schema: string): Promise<{ schemas: number; keys: number }> {
  const r = await db.query('SELECT 1 FROM information_schema.schemata WHERE schema_name = $1', [schema]);
  const keys = await scanKeys(redis, `${prefix}:*`);
  return { schemas: r.rowCount ?? 0, keys: keys.length };
}

describe('truth checker', () => {
  it('a read is stale when a newer version had committed before it started; age from the earliest such commit', () => {
    const t = new Truth(new Map([[1, 5], [2, 7]]), 1_000);
    t.commit(1, 6, 2_000);
    t.commit(1, 8, 2_500); // acknowledged before 7 (another writer): 7's answer arrives later
    t.commit(1, 7, 2_600);
    t.read(1, 5, 1_500); // before any newer commit: fresh
    t.read(1, 5, 2_000); // same ms as the commit: not provably stale
    t.read(1, 5, 2_100); // 6 committed at 2000: stale by 100
    t.read(1, 6, 2_700); // 8 committed at 2500 (earlier than 7): stale by 200
    t.read(1, 8, 9_000); // newest: fresh
    t.read(2, 7, 9_000); // never written: fresh
    t.read(2, 6, 1_200); // older than the baseline: stale since the scenario began
    const s = t.finish(150);
    expect(s).toEqual({ reads: 7, staleReads: 3, staleBeyondBound: 2, ages: [100, 200, 200] });
    expect(t.latest()).toEqual(new Map([[1, 8], [2, 7]]));
  });

  it('write-behind versions (large, sparse) work the same; unknown outcomes never make a read stale', () => {
    const t = new Truth(new Map([[1, 3]]), 0);
    t.commit(1, 1_700_000_000_000_001, 100);
    t.read(1, 3, 150);
    t.read(1, 1_700_000_000_000_001, 150);
    t.read(1, 3, 90);
    expect(t.finish(1_000)).toMatchObject({ reads: 3, staleReads: 1, ages: [50] });
  });
});

describe('npm run demo', () => {
  it('a short run: bus off shows stale reads, every other scenario zero stale reads beyond the bound; it cleans up', async () => {
    const run = await demo([
      '--json', '--workers', '2', '--threads', '1', '--duration', '3s', '--products', '20', '--write-ratio', '0.2',
      '--metrics-port', '0',
    ]);
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    const report = JSON.parse(run.stdout) as Report;
    const rows = report.scenarios;
    expect(rows.map((r) => r.name)).toEqual(['bus off', 'bus on', 'write-behind', 'external writes', 'chaos']);
    for (const r of rows) {
      expect(r).toHaveProperty('staleBeyondBound');
      expect(r).toHaveProperty('boundMs', 1000);
      expect(r).toHaveProperty('lagP50Ms');
      expect(r).toHaveProperty('lagP99Ms');
      expect(r).toHaveProperty('hitRatio');
      expect(r).toHaveProperty('writes');
    }
    const ran = rows.filter((r) => r.skipped === undefined);
    const off = ran.find((r) => r.name === 'bus off')!;
    expect(off.staleReads).toBeGreaterThan(0);
    expect(off.lagP50Ms).toBeNull();
    for (const r of ran.filter((x) => x.name !== 'bus off')) {
      expect(r.reads, r.name).toBeGreaterThan(0);
      expect(r.writes, r.name).toBeGreaterThan(0);
      expect(r.staleBeyondBound, `${r.name}: ${JSON.stringify(r)}`).toBe(0);
      expect(r.lagP50Ms, r.name).not.toBeNull();
    }
    const chaos = ran.find((r) => r.name === 'chaos')!;
    expect(chaos.notes.join(' ')).toMatch(/CLIENT KILL [1-9]/);
    if (chaos.notes.includes('Redis restarted')) {
      // every cache (2 workers × (main + 1 thread)) noticed the restart and cleared itself (I2)
      expect(chaos.caches).toBe(4);
      expect(chaos.notes).toContain('all 4 caches detected the restart');
      expect(chaos.gaps.restart).toBeGreaterThanOrEqual(4);
    }
    expect(report.ok).toBe(true);
    expect(await leftovers(report.infra.prefix, report.infra.schema)).toEqual({ schemas: 0, keys: 0 });
  }, 120_000);

  it('Ctrl-C stops the workers and cleans up, then exits with 130', async () => {
    let sent = false;
    const run = await demo(['--json', '--workers', '2', '--threads', '1', '--duration', '20s', '--scenario', 'bus-on', '--metrics-port', '0'], {},
      (child, stderr) => {
        if (!sent && /running for/.test(stderr())) { sent = true; child.kill('SIGINT'); }
      });
    expect(sent).toBe(true);
    expect(run.code, run.stderr).toBe(130);
    expect(run.stderr).toMatch(/interrupted/);
    const report = JSON.parse(run.stdout) as Report & { interrupted: boolean };
    expect(report.interrupted).toBe(true);
    expect(await leftovers(report.infra.prefix, report.infra.schema)).toEqual({ schemas: 0, keys: 0 });
  });

  it('on a fresh machine (no server on loopback) it starts its own redis-server and an in-process PGlite, and stops them', async () => {
    const env = { CACHEBUS_DEMO_NO_LOOPBACK: '1', REDIS_URL: undefined, DATABASE_URL: undefined };
    const run = await demo(['--json', '--workers', '2', '--threads', '1', '--duration', '2s', '--products', '20', '--write-ratio', '0.2',
      '--scenario', 'bus-off,bus-on', '--metrics-port', '0'], env);
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    const report = JSON.parse(run.stdout) as Report & { infra: { redis: string; redisUrl: string; postgres: string } };
    expect(report.infra).toMatchObject({ redis: 'owned', postgres: 'pglite' });
    expect(report.scenarios.map((r) => [r.name, r.ok])).toEqual([['bus off', true], ['bus on', true]]);
    const gone = new Redis(report.infra.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    gone.on('error', () => undefined);
    await expect(gone.connect()).rejects.toThrow();
    gone.disconnect();
  });

  it('says in one sentence how to get Redis when REDIS_URL does not answer; bad options exit 2 with the usage', async () => {
    const port = await freePort();
    const noRedis = await demo(['--duration', '1s'], { REDIS_URL: `redis://127.0.0.1:${port}` });
    expect(noRedis.code).toBe(1);
    expect(noRedis.stderr).toMatch(/REDIS_URL is set but Redis does not answer there/);
    const bad = await demo(['--workers', 'zero']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--workers must be an integer/);
    expect(bad.stderr).toMatch(/usage: npm run demo/);
    const unknown = await demo(['--scenario', 'nope']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown scenario nope/);
  });
});
