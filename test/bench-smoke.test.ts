/**
 * A short smoke of every benchmark (`--smoke` sizes): the harness runs end to end against the
 * real Redis, rows have the documented JSON shape and consistent arithmetic, and the bench
 * cleans up after itself. Never a speed assertion: figures on a shared machine mean nothing here.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import type { Row } from '../bench/harness.js';
import { benchmarks, runBenchmarks } from '../bench/run.js';
import { REDIS_URL } from './helpers/redis.js';
import { scanKeys } from '../bus/scan.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli/cachebus.js', import.meta.url));
// Every bench key of this file lives under this root, so cleanup can be checked exactly.
const ROOT = `cbsmoke-${randomBytes(4).toString('hex')}`;
process.env.CACHEBUS_BENCH_PREFIX = ROOT;
const FIELDS = ['baseline', 'baselineValue', 'met', 'metric', 'name', 'ratio', 'target', 'unit', 'value'];

async function benchKeys(): Promise<string[]> {
  const r = new Redis(REDIS_URL);
  try {
    return await scanKeys(r, `${ROOT}-*`);
  } finally {
    r.disconnect();
  }
}

function checkShape(rows: Row[], name: string): void {
  expect(rows.length).toBeGreaterThan(0);
  for (const r of rows) {
    expect(Object.keys(r).sort()).toEqual(FIELDS);
    expect(r.name).toBe(name);
    for (const k of ['metric', 'unit', 'baseline'] as const) expect(typeof r[k]).toBe('string');
    for (const k of ['value', 'baselineValue', 'ratio'] as const) {
      expect(r[k] === null || Number.isFinite(r[k])).toBe(true);
    }
    if (r.value !== null && r.baselineValue !== null && r.baselineValue !== 0) {
      expect(r.ratio).toBeCloseTo(r.value / r.baselineValue, 9);
    } else {
      expect(r.ratio).toBeNull();
    }
    expect(r.target === null || typeof r.target === 'string').toBe(true);
    // met is decided exactly when there is a target and a figure to judge.
    expect(r.met === null || typeof r.met === 'boolean').toBe(true);
    if (r.target === null || r.value === null) expect(r.met).toBeNull();
    if (r.value === null) expect(r.metric).toMatch(/not available/);
  }
}

async function smoke(name: string): Promise<Row[]> {
  const { rows, failed } = await runBenchmarks({ names: [name], smoke: true, redisUrl: REDIS_URL, log: () => undefined });
  expect(failed).toEqual([]);
  checkShape(rows, name);
  return rows;
}

describe('bench smoke', () => {
  afterAll(async () => {
    // Every benchmark removes the keys it created under its random prefix.
    expect(await benchKeys()).toEqual([]);
    delete process.env.CACHEBUS_BENCH_PREFIX;
  });

  it('lists the six benchmarks of the issue', () => {
    expect(benchmarks.map((b) => b.name)).toEqual(['local-hit', 'propagation', 'bus-throughput', 'write-behind', 'memory', 'hit-ratio']);
  });

  it('local-hit measures cachebus against lru-cache and Map', async () => {
    const rows = await smoke('local-hit');
    expect(rows.filter((r) => r.value !== null).every((r) => r.value! > 0 && r.unit === 'ops/s')).toBe(true);
    expect(new Set(rows.map((r) => r.baseline))).toEqual(new Set(['lru-cache', 'Map', 'lru-cache, shared module']));
    expect(rows.filter((r) => r.target !== null).map((r) => r.target)).toContain('>= 0.8x');
  });

  it('propagation measures every (reader, key) pair of cachebus and its three baselines', async () => {
    const rows = await smoke('propagation');
    // 2 patterns × 3 rates × (p50 × 4 baselines incl. the A/A floor, p99 × 2, max, reader and Redis CPU × 2 baselines,
    // and options wake: 'pubsub', 'host' and 'host' with hostFanout: 'unicast': each p50 × 3 baselines incl. the default, p99 × 2,
    // reader and Redis CPU vs the default; 'host' p50 also against the bare broadcast datagram, its floor, and p50 and p99 against unicast)
    expect(rows).toHaveLength(210);
    expect(rows.every((r) => !/LOST/.test(r.metric))).toBe(true);
    expect(rows.every((r) => r.value! > 0 && r.baselineValue! > 0)).toBe(true);
    expect(new Set(rows.map((r) => r.baseline))).toEqual(new Set([
      'XADD→XREAD', 'XADD→XREAD (A/A: the floor again)', 'PUBLISH→SUBSCRIBE', 'BentoCache', "cachebus wake: 'stream' (default)",
      'loopback broadcast datagram (bare)', "wake: 'host', hostFanout: 'unicast'",
    ]));
    expect(rows.filter((r) => r.metric.endsWith("wake: 'pubsub'"))).toHaveLength(42);
    expect(rows.filter((r) => r.metric.endsWith("wake: 'host'"))).toHaveLength(60);
    expect(rows.filter((r) => r.metric.endsWith("wake: 'host', hostFanout: 'unicast'"))).toHaveLength(42);
    expect(new Set(rows.map((r) => r.metric.split(',')[0]))).toEqual(new Set(['cold p50', 'cold p99', 'cold max', 'cold reader CPU per key', 'cold Redis CPU per key', 'rti p50', 'rti p99', 'rti max', 'rti reader CPU per key', 'rti Redis CPU per key']));
  });

  it('bus-throughput delivers every key to every reader', async () => {
    const rows = await smoke('bus-throughput');
    expect(rows).toHaveLength(2);
    expect(rows.every((r) => r.value! > 0 && r.baselineValue! > 0 && !/delivered/.test(r.metric + r.baseline))).toBe(true);
  });

  it('write-behind is registered: measured, or clearly not available', async () => {
    const rows = await smoke('write-behind');
    expect(rows.length).toBeGreaterThanOrEqual(2);
  });

  it('memory reports heap bytes per entry for each policy', async () => {
    const rows = await smoke('memory');
    expect(rows.every((r) => r.unit === 'B' && r.baselineValue! > 0)).toBe(true);
    expect(rows.find((r) => r.target !== null)?.baseline).toBe('lru-cache');
  });

  it('hit-ratio: the lru policy (lru-cache inside) matches lru-cache exactly', async () => {
    const rows = await smoke('hit-ratio');
    expect(rows).toHaveLength(8);
    for (const r of rows) {
      expect(r.value).toBeGreaterThan(0);
      expect(r.value).toBeLessThanOrEqual(100);
    }
    for (const r of rows.filter((x) => x.metric.endsWith('policy lru'))) expect(r.ratio).toBe(1);
  });

  it('cachebus bench --json prints { benchmarks: [...] } and rejects unknown names', async () => {
    const { stdout } = await run('node', [CLI, 'bench', 'hit-ratio', '--smoke', '--json'], { env: { ...process.env, REDIS_URL } });
    const parsed = JSON.parse(stdout) as { benchmarks: Row[] };
    expect(Object.keys(parsed)).toEqual(['benchmarks']);
    checkShape(parsed.benchmarks, 'hit-ratio');
    const bad = await run('node', [CLI, 'bench', 'no-such-bench']).then(() => 0, (e: { code: number }) => e.code);
    expect(bad).toBe(2);
  });
});
