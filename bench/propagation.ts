/**
 * Benchmark 2, `propagation`: one-way time from `invalidate()` in one process to the drop
 * applied in each of 4 (and 8) other processes, p50/p99/max over every (reader, key) pair.
 * Two patterns:
 *   cold  readers hold the keys from setup; the publisher only invalidates.
 *   rti   read-then-invalidate, as apps run: each round every reader (over IPC, as if serving
 *         a request) and the publisher first `get` the key, then the publisher invalidates it.
 * Three rates: one key at a time ('serial': the next round once every reader applied the
 * previous key), paced 100/s and 5,000/s. Baselines in the same run, same processes, same
 * pacing: bare ioredis XADD → XREAD BLOCK (the floor), the same floor measured a second time
 * (`xadd-aa`, the A/A noise control), bare PUBLISH → SUBSCRIBE, bare loopback datagrams (`udp`,
 * one per reader; `udp-bcast`, one to the loopback broadcast address that every reader listens
 * on: the floor of `wake: 'host'`), and BentoCache 1.x (L1 memory + Redis pub/sub bus: delete →
 * remote L1 delete). `cachebus-host-unicast` is `wake: 'host'` with `hostFanout: 'unicast'`
 * (one datagram per peer, as before issue 15's ninth pass).
 * Targets (issue 15): p50 ≤ 1.3× the XADD → XREAD floor and ≤ 0.7× BentoCache; p99 ≤ 1.5× the floor.
 *
 * Clock: send and apply are stamped with CLOCK_MONOTONIC (process.hrtime), which all
 * processes on the machine share. The bare baselines publish once per pacing tick with the
 * tick's keys (what a batching publisher would do); cachebus and BentoCache are called once
 * per key, as an application would, and batch (or not) as they do by design.
 *
 * CPU: per (reader, key) delivery, in one reader (in 'rti' this includes serving the reads
 * over IPC, the same for every system) and in Redis (INFO cpu delta over the slice: exact on a
 * private server, polluted by other clients on a shared one).
 *
 * Noise: the machine is shared, and load comes in bursts. Each scenario is measured in
 * several passes of short slices, every system once per pass in rotating order, and the
 * samples of all passes are pooled: a burst then hits every system about equally.
 *
 * Environment (to measure a subset): PROPAGATION_PATTERNS=cold,rti PROPAGATION_READERS=4,8
 * PROPAGATION_RATES=serial,100,5000 PROPAGATION_PASSES=4 (and, to profile one system,
 * PROPAGATION_SYSTEMS=cachebus,xadd: the rows need both).
 */
import { cleanupPrefix, randomPrefix, row, unavailable, type BenchContext, type Benchmark, type Row } from './harness.js';
import { BusNodes, emptySamples, pool, summarize, type Latency, type LatencySamples, type Pattern, type Rate, type System } from './fixtures/bus-nodes.js';

export async function bentoAvailable(): Promise<boolean> {
  return import('bentocache').then(() => true, () => false);
}

const fmt = (l: Latency): string =>
  `p50 ${l.p50.toFixed(0)} µs, p99 ${l.p99.toFixed(0)} µs, max ${l.max.toFixed(0)} µs (${l.samples} samples${l.lost ? `, ${l.lost} LOST` : ''}${l.publishErrors ? `, ${l.publishErrors} publish errors` : ''}); CPU µs/key: publisher ${l.publisherCpuPerKey.toFixed(1)}, each reader ${l.readerCpuPerKey.toFixed(1)}, Redis ${l.redisCpuPerKey.toFixed(1)}`;

const list = (name: string): string[] | undefined => process.env[name]?.split(',').map((x) => x.trim()).filter(Boolean);

export const propagation: Benchmark = {
  name: 'propagation',
  summary: 'invalidate() in one process → drop applied in 4 and 8 others (µs), cold and read-then-invalidate, vs XADD→XREAD, PUBLISH→SUBSCRIBE, BentoCache',
  async run(ctx: BenchContext): Promise<Row[]> {
    const patterns = (list('PROPAGATION_PATTERNS') ?? ['cold', 'rti']) as Pattern[];
    const readerCounts = list('PROPAGATION_READERS')?.map(Number) ?? (ctx.smoke ? [2] : [4, 8]);
    const rates: Rate[] = list('PROPAGATION_RATES')?.map((r) => (r === 'serial' ? 'serial' : Number(r))) ?? ['serial', 100, 5000];
    const passes = Number(process.env.PROPAGATION_PASSES ?? (ctx.smoke ? 1 : 4));
    const sliceKeys = (rate: Rate): number => (ctx.smoke ? 40 : rate === 'serial' ? 150 : rate <= 100 ? 150 : 5000);
    const bento = await bentoAvailable();
    const only = list('PROPAGATION_SYSTEMS');
    // 'cachebus-every' (every read a proving read: the reader before plain reads) is measured only
    // when named; 'cachebus-pubsub' and 'cachebus-host' (options wake: 'pubsub' and 'host')
    // always, beside the default, so the choice of default rests on one run.
    const systems = (['cachebus', 'cachebus-pubsub', 'cachebus-host', 'cachebus-host-unicast', 'cachebus-every', 'xadd', 'xadd-aa', 'pubsub', 'udp', 'udp-bcast', ...(bento ? ['bentocache' as const] : [])] as System[])
      .filter((s) => (only === undefined ? s !== 'cachebus-every' : only.includes(s)));
    const prefix = randomPrefix();
    const nodes = await BusNodes.start(Math.max(...readerCounts), ctx.redisUrl, prefix);
    const rows: Row[] = [];
    try {
      // A JIT warm-up slice per system and pattern (discarded), so no system pays for cold code in the first pass.
      for (const pattern of patterns) {
        for (const system of systems) {
          const n = ctx.smoke ? 100 : 1500;
          await nodes.setup(system, 'latency', Math.max(...readerCounts), n, pattern);
          await nodes.latency(5000, n, pattern);
          await nodes.teardown();
        }
      }
      let turn = 0;
      for (const pattern of patterns) {
        for (const readers of readerCounts) {
          for (const rate of rates) {
            const count = sliceKeys(rate);
            const pooled = new Map<System, LatencySamples>(systems.map((s) => [s, emptySamples()]));
            for (let pass = 0; pass < passes; pass++) {
              // Rotate the order of systems from slice to slice, so none always goes first.
              const order = systems.map((_, i) => systems[(i + turn) % systems.length]!);
              turn++;
              for (const system of order) {
                await nodes.setup(system, 'latency', readers, count, pattern, rate === 'serial');
                pool(pooled.get(system)!, await nodes.latency(rate, count, pattern));
                await nodes.teardown();
              }
            }
            const res = new Map<System, Latency>([...pooled].map(([s, l]) => [s, summarize(l)]));
            const rateName = rate === 'serial' ? 'one at a time' : `${rate}/s`;
            for (const [system, l] of res) ctx.log(`propagation: ${pattern}, ${readers} readers, ${rateName}, ${system}: ${fmt(l)}`);
            const cb = res.get('cachebus');
            const xadd = res.get('xadd');
            const aa = res.get('xadd-aa');
            const pubsub = res.get('pubsub');
            const udp = res.get('udp-bcast');
            const bc = res.get('bentocache');
            if (!cb || !xadd || !aa || !pubsub) continue; // a subset (PROPAGATION_SYSTEMS): logged only
            ctx.log(`propagation: ${pattern}, ${readers} readers, ${rateName}: A/A noise (xadd-aa / xadd): p50 ${(aa.p50 / xadd.p50).toFixed(2)}x, p99 ${(aa.p99 / xadd.p99).toFixed(2)}x`);
            const lost = cb.lost ? `, ${cb.lost} LOST` : '';
            const what = (stat: string): string => `${pattern} ${stat}, ${readers} readers, ${rateName}${lost}`;
            rows.push(row('propagation', what('p50'), 'µs', cb.p50, 'XADD→XREAD', xadd.p50, { ratioMax: 1.3 }));
            rows.push(row('propagation', what('p50'), 'µs', aa.p50, 'XADD→XREAD (A/A: the floor again)', xadd.p50));
            rows.push(row('propagation', what('p50'), 'µs', cb.p50, 'PUBLISH→SUBSCRIBE', pubsub.p50));
            rows.push(bc
              ? row('propagation', what('p50'), 'µs', cb.p50, 'BentoCache', bc.p50, { ratioMax: 0.7 })
              : unavailable('propagation', what('p50'), 'µs', 'BentoCache', 'bentocache not installed', { ratioMax: 0.7 }));
            rows.push(row('propagation', what('p99'), 'µs', cb.p99, 'XADD→XREAD', xadd.p99, { ratioMax: 1.5 }));
            rows.push(bc
              ? row('propagation', what('p99'), 'µs', cb.p99, 'BentoCache', bc.p99)
              : unavailable('propagation', what('p99'), 'µs', 'BentoCache', 'bentocache not installed'));
            rows.push(row('propagation', what('max'), 'µs', cb.max, 'XADD→XREAD', xadd.max));
            rows.push(row('propagation', what('reader CPU per key'), 'µs', cb.readerCpuPerKey, 'XADD→XREAD', xadd.readerCpuPerKey));
            rows.push(row('propagation', what('Redis CPU per key'), 'µs', cb.redisCpuPerKey, 'XADD→XREAD', xadd.redisCpuPerKey));
            if (bc) {
              rows.push(row('propagation', what('reader CPU per key'), 'µs', cb.readerCpuPerKey, 'BentoCache', bc.readerCpuPerKey));
              rows.push(row('propagation', what('Redis CPU per key'), 'µs', cb.redisCpuPerKey, 'BentoCache', bc.redisCpuPerKey));
            }
            const options = [['cachebus-pubsub', "wake: 'pubsub'"], ['cachebus-host', "wake: 'host'"], ['cachebus-host-unicast', "wake: 'host', hostFanout: 'unicast'"]] as const;
            for (const [system, label] of options) {
              const ps = res.get(system);
              if (!ps) continue;
              // The option, against the same targets, and against the default (it must win every row to become it).
              const opt = (stat: string): string => `${what(stat)}, ${label}${ps.lost ? `, ${ps.lost} LOST` : ''}`;
              rows.push(row('propagation', opt('p50'), 'µs', ps.p50, 'XADD→XREAD', xadd.p50, { ratioMax: 1.3 }));
              if (bc) rows.push(row('propagation', opt('p50'), 'µs', ps.p50, 'BentoCache', bc.p50, { ratioMax: 0.7 }));
              rows.push(row('propagation', opt('p99'), 'µs', ps.p99, 'XADD→XREAD', xadd.p99, { ratioMax: 1.5 }));
              rows.push(row('propagation', opt('p50'), 'µs', ps.p50, "cachebus wake: 'stream' (default)", cb.p50));
              rows.push(row('propagation', opt('p99'), 'µs', ps.p99, "cachebus wake: 'stream' (default)", cb.p99));
              rows.push(row('propagation', opt('reader CPU per key'), 'µs', ps.readerCpuPerKey, "cachebus wake: 'stream' (default)", cb.readerCpuPerKey));
              rows.push(row('propagation', opt('Redis CPU per key'), 'µs', ps.redisCpuPerKey, "cachebus wake: 'stream' (default)", cb.redisCpuPerKey));
              if (system === 'cachebus-host' && udp) rows.push(row('propagation', opt('p50'), 'µs', ps.p50, 'loopback broadcast datagram (bare)', udp.p50));
              const unicast = res.get('cachebus-host-unicast');
              if (system === 'cachebus-host' && unicast) {
                rows.push(row('propagation', opt('p50'), 'µs', ps.p50, "wake: 'host', hostFanout: 'unicast'", unicast.p50));
                rows.push(row('propagation', opt('p99'), 'µs', ps.p99, "wake: 'host', hostFanout: 'unicast'", unicast.p99));
              }
            }
          }
        }
      }
    } finally {
      await nodes.stop();
      await cleanupPrefix(ctx.redisUrl, prefix);
    }
    return rows;
  },
};
