import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatScale, runScale } from '../bench/scale.js';
import { randomPrefix, TestRedis } from './helpers/redis.js';

// The CI variant of `node dist/bench/scale.js workers` (docs/scaling.md): 200 simulated
// workers (lightweight readers, 50 per process) on one namespace at 1,000 invalidations/s,
// for 2 s, on a redis-server of its own. The bound is the default maxStaleMs: a worker lagging
// more than that would stop serving. Figures are printed, not asserted (no speed targets here).

let redis: TestRedis;
beforeAll(async () => { redis = await TestRedis.start(); });
afterAll(async () => { await redis?.dispose(); });

describe('scale: 200 workers on one namespace at 1,000 invalidations/s', () => {
  it.each(['direct', 'relay'] as const)('%s: every worker gets every entry, no gap, lag within the staleness bound', async (mode) => {
    const r = await runScale({
      redisUrl: redis.url, prefix: randomPrefix(), namespace: 'scale', mode,
      readers: 200, processes: 4, rate: 1000, durationMs: 2000, maxStaleMs: 10_000,
    });
    console.log(formatScale(r));
    expect(r.published).toBeGreaterThan(0);
    expect(r.missing).toBe(0);
    expect(r.gaps).toBe(0);
    expect(r.lagMs.max).toBeLessThan(r.maxStaleMs);
    // one blocking connection per worker without the relay; one per process with it
    if (mode === 'direct') expect(r.redisConnections).toBeGreaterThanOrEqual(200);
    else expect(r.redisConnections).toBeLessThanOrEqual(4 * 2 + 2);
  });
});
