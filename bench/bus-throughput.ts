/**
 * Benchmark 3, `bus-throughput`: keys invalidated per second, end to end, into 4 reader
 * processes, the publisher going at full speed in calls of 100 keys with 10 calls in flight.
 * A figure is total keys / (time the last reader had them all − first send). Baselines in
 * the same run: bare ioredis XADD → XREAD with the same batches, pipelined 10 per round trip
 * (the floor), and BentoCache 1.x's bus (`deleteMany` of each batch, L1 deletes in each reader).
 * Targets: at least 100,000 keys/s and at least BentoCache's figure.
 * Each system runs once per pass, passes interleaved (rotating order); the median pass counts.
 */
import { cleanupPrefix, randomPrefix, row, unavailable, type BenchContext, type Benchmark, type Row } from './harness.js';
import { median } from './harness.js';
import { BusNodes, type System, type Throughput } from './fixtures/bus-nodes.js';
import { bentoAvailable } from './propagation.js';

export const busThroughput: Benchmark = {
  name: 'bus-throughput',
  summary: 'keys/s invalidated end to end into 4 readers, batched, vs pipelined XADD/XREAD and BentoCache',
  async run(ctx: BenchContext): Promise<Row[]> {
    const readers = ctx.smoke ? 2 : 4;
    const total = ctx.smoke ? 5_000 : 300_000;
    const passes = ctx.smoke ? 1 : 3;
    const batch = 100;
    const window = 10;
    const deadlineMs = ctx.smoke ? 20_000 : 60_000;
    const bento = await bentoAvailable();
    // BUS_THROUGHPUT_EVERY=1 adds cachebus with every read a proving read (the reader before plain reads).
    const systems: System[] = ['cachebus', ...(process.env.BUS_THROUGHPUT_EVERY ? ['cachebus-every' as const] : []), 'xadd', ...(bento ? ['bentocache' as const] : [])];
    const prefix = randomPrefix();
    const nodes = await BusNodes.start(readers, ctx.redisUrl, prefix);
    const runs = new Map<System, Throughput[]>(systems.map((s) => [s, []]));
    try {
      for (let pass = 0; pass < passes; pass++) {
        for (let i = 0; i < systems.length; i++) {
          const system = systems[(i + pass) % systems.length]!;
          await nodes.setup(system, 'throughput', readers, 0);
          const t = await nodes.throughput(total, batch, window, deadlineMs);
          await nodes.teardown();
          ctx.log(`bus-throughput: ${system}: ${Math.round(t.keysPerSec)} keys/s into ${readers} readers`
            + ` (sent in ${t.sendSeconds.toFixed(2)} s, all applied in ${t.endToEndSeconds.toFixed(2)} s;`
            + ` CPU µs/key: publisher ${t.publisherCpuPerKey.toFixed(2)}, each reader ${t.readerCpuPerKey.toFixed(2)})`
            + `, delivered ${(t.delivered * 100).toFixed(1)}%${t.publishErrors ? `, ${t.publishErrors} publish errors` : ''}`);
          runs.get(system)!.push(t);
        }
      }
    } finally {
      await nodes.stop();
      await cleanupPrefix(ctx.redisUrl, prefix);
    }
    // The median pass by keys/s, per system.
    const res = new Map<System, Throughput>([...runs].map(([s, ts]) => {
      const m = median(ts.map((t) => t.keysPerSec));
      return [s, ts.find((t) => t.keysPerSec === m) ?? ts[0]!];
    }));
    const cb = res.get('cachebus')!;
    const partial = (t: Throughput | undefined): string => (t && t.delivered < 1 ? ` (${(t.delivered * 100).toFixed(1)}% delivered)` : '');
    const what = `keys/s into ${readers} readers, ${batch}-key calls${partial(cb)}`;
    const bc = res.get('bentocache');
    return [
      row('bus-throughput', what, 'keys/s', cb.keysPerSec, 'XADD/XREAD pipelined', res.get('xadd')!.keysPerSec, { valueMin: 100_000 }),
      bc
        ? row('bus-throughput', what, 'keys/s', cb.keysPerSec, `BentoCache${partial(bc)}`, bc.keysPerSec, { ratioMin: 1, valueMin: 100_000 })
        : unavailable('bus-throughput', what, 'keys/s', 'BentoCache', 'bentocache not installed', { ratioMin: 1 }),
    ];
  },
};
