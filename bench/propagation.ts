/**
 * Benchmark 2, `propagation`: one-way time from `invalidate()` in one process to the drop
 * applied in each of 4 (and 8) other processes, p50/p99/max over every (reader, key) pair,
 * paced at 100 and 5,000 invalidations/s. Baselines in the same run, same processes, same
 * pacing: bare ioredis XADD → XREAD BLOCK (the floor), bare PUBLISH → SUBSCRIBE, and
 * BentoCache 1.x (L1 memory + Redis pub/sub bus: delete → remote L1 delete).
 * Targets: p50 within 1.5x of the XADD → XREAD floor; p50 and p99 no worse than BentoCache.
 *
 * Clock: send and apply are stamped with CLOCK_MONOTONIC (process.hrtime), which all
 * processes on the machine share. The bare baselines publish once per pacing tick with the
 * tick's keys (what a batching publisher would do); cachebus and BentoCache are called once
 * per key, as an application would, and batch (or not) as they do by design.
 *
 * Noise: the machine is shared, and load comes in bursts. Each scenario is measured in
 * several passes of short slices, every system once per pass in rotating order, and the
 * samples of all passes are pooled: a burst then hits every system about equally.
 */
import { cleanupPrefix, randomPrefix, row, unavailable, type BenchContext, type Benchmark, type Row } from './harness.js';
import { BusNodes, emptySamples, pool, summarize, type Latency, type LatencySamples, type System } from './fixtures/bus-nodes.js';

export async function bentoAvailable(): Promise<boolean> {
  return import('bentocache').then(() => true, () => false);
}

const fmt = (l: Latency): string =>
  `p50 ${l.p50.toFixed(0)} µs, p99 ${l.p99.toFixed(0)} µs, max ${l.max.toFixed(0)} µs (${l.samples} samples${l.lost ? `, ${l.lost} LOST` : ''}${l.publishErrors ? `, ${l.publishErrors} publish errors` : ''}); CPU µs/key: publisher ${l.publisherCpuPerKey.toFixed(1)}, each reader ${l.readerCpuPerKey.toFixed(1)}`;

export const propagation: Benchmark = {
  name: 'propagation',
  summary: 'invalidate() in one process → drop applied in 4 and 8 others (µs), vs XADD→XREAD, PUBLISH→SUBSCRIBE, BentoCache',
  async run(ctx: BenchContext): Promise<Row[]> {
    const readerCounts = ctx.smoke ? [2] : [4, 8];
    const rates = [100, 5000];
    const passes = ctx.smoke ? 1 : 4;
    const sliceSeconds = (rate: number): number => (ctx.smoke ? 0.2 : rate <= 100 ? 1.5 : 1);
    const bento = await bentoAvailable();
    const systems: System[] = ['cachebus', 'xadd', 'pubsub', ...(bento ? ['bentocache' as const] : [])];
    const prefix = randomPrefix();
    const nodes = await BusNodes.start(Math.max(...readerCounts), ctx.redisUrl, prefix);
    const rows: Row[] = [];
    try {
      // A JIT warm-up slice per system (discarded), so no system pays for cold code in the first pass.
      for (const system of systems) {
        await nodes.setup(system, 'latency', Math.max(...readerCounts), ctx.smoke ? 200 : 2500);
        await nodes.latency(5000, ctx.smoke ? 200 : 2500);
        await nodes.teardown();
      }
      let turn = 0;
      for (const readers of readerCounts) {
        for (const rate of rates) {
          const count = Math.round(rate * sliceSeconds(rate));
          const pooled = new Map<System, LatencySamples>(systems.map((s) => [s, emptySamples()]));
          for (let pass = 0; pass < passes; pass++) {
            // Rotate the order of systems from slice to slice, so none always goes first.
            const order = systems.map((_, i) => systems[(i + turn) % systems.length]!);
            turn++;
            for (const system of order) {
              await nodes.setup(system, 'latency', readers, count);
              pool(pooled.get(system)!, await nodes.latency(rate, count));
              await nodes.teardown();
            }
          }
          const res = new Map<System, Latency>([...pooled].map(([s, l]) => [s, summarize(l)]));
          for (const [system, l] of res) ctx.log(`propagation: ${readers} readers, ${rate}/s, ${system}: ${fmt(l)}`);
          const cb = res.get('cachebus')!;
          const lost = cb.lost ? `, ${cb.lost} LOST` : '';
          const what = (stat: string): string => `${stat}, ${readers} readers, ${rate}/s${lost}`;
          const xadd = res.get('xadd')!;
          const pubsub = res.get('pubsub')!;
          const bc = res.get('bentocache');
          rows.push(row('propagation', what('p50'), 'µs', cb.p50, 'XADD→XREAD', xadd.p50, { ratioMax: 1.5 }));
          rows.push(row('propagation', what('p50'), 'µs', cb.p50, 'PUBLISH→SUBSCRIBE', pubsub.p50));
          rows.push(bc
            ? row('propagation', what('p50'), 'µs', cb.p50, 'BentoCache', bc.p50, { ratioMax: 1 })
            : unavailable('propagation', what('p50'), 'µs', 'BentoCache', 'bentocache not installed', { ratioMax: 1 }));
          rows.push(row('propagation', what('p99'), 'µs', cb.p99, 'XADD→XREAD', xadd.p99));
          rows.push(bc
            ? row('propagation', what('p99'), 'µs', cb.p99, 'BentoCache', bc.p99, { ratioMax: 1 })
            : unavailable('propagation', what('p99'), 'µs', 'BentoCache', 'bentocache not installed', { ratioMax: 1 }));
          rows.push(row('propagation', what('max'), 'µs', cb.max, 'XADD→XREAD', xadd.max));
        }
      }
    } finally {
      await nodes.stop();
      await cleanupPrefix(ctx.redisUrl, prefix);
    }
    return rows;
  },
};
