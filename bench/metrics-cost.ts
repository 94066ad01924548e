/**
 * `metrics-cost`: what the issue-6 observability costs on the local hit path, measured in one
 * run, side by side:
 *   - cachebus `get` hits with metrics off (no CacheMetrics, staleSampleRate 0): the baseline;
 *   - the same with metrics off again (A/A control: the noise of the run);
 *   - with CacheMetrics attached (counters read at scrape time: nothing on the hit path);
 *   - with the stale-read sampler on at 1 % and 0.1 % of hits (a countdown per hit, a check
 *     scheduled off the hot path for the picked ones), metrics attached;
 *   - a bare lru-cache 11 `get`, for reference (the floor of PERF-FLOORS.md).
 * Also: the time one scrape of CacheMetrics takes (local caches, no Redis round trip).
 *
 *   npx tsc -p tsconfig.json && node dist/bench/metrics-cost.js [--ops 1000000] [--rounds 9]
 *
 * Hits are made in chunks of `--chunk` (default 1000) with a turn of the event loop between
 * chunks, as a server answers requests: the sampler's checks run there, inside the timed span,
 * so their cost counts. Time is the process's CPU time (`process.cpuUsage`), so that the time
 * a loaded machine gives to other processes does not count. Each contender has its own loop function (compiled separately), rounds
 * are short and interleaved with a rotating order. Reported: the median hits per second of each
 * contender, and the median over rounds of its ratio to the baseline measured in the same round
 * (a paired comparison: a noisy neighbour on a shared machine slows both sides of a pair alike).
 * The A/A control's ratio shows how much of a difference is noise.
 */
import { parseArgs } from 'node:util';
import { LRUCache } from 'lru-cache';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { CacheMetrics } from '../worker-runtime/metrics/index.js';

type Loop = (target: unknown, keys: string[], idx: Uint32Array, from: number, to: number, loader: () => number) => number;

function makeLoop(call: string): Loop {
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  return new Function('t', 'keys', 'idx', 'from', 'to', 'loader', `
    let s = 0;
    for (let i = from; i < to; i++) {
      const v = ${call};
      if (typeof v !== 'number') throw new Error('not a hit at ' + i);
      s += v;
    }
    return s;`) as Loop;
}

interface Contender { readonly label: string; readonly target: unknown; readonly loop: Loop; readonly samples: number[] }

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { ops: { type: 'string', default: '200000' }, rounds: { type: 'string', default: '60' }, keys: { type: 'string', default: '100000' }, chunk: { type: 'string', default: '1000' } } });
  const chunk = Number(values.chunk);
  const ops = Number(values.ops);
  const rounds = Number(values.rounds);
  const nKeys = Number(values.keys);
  const keys = Array.from({ length: nKeys }, (_, i) => `product:${i}`);
  const idx = new Uint32Array(ops);
  for (let i = 0; i < ops; i++) idx[i] = Math.floor(Math.random() * nKeys);
  const loader = (): number => 1;

  const make = async (extra: object): Promise<Cache<number>> => {
    const c = await createCache<number>({ redis: false, namespace: 'bench', maxEntries: nKeys * 2, ...extra });
    for (const k of keys) await c.get(k, loader);
    return c;
  };
  const off = await make({});
  const offAgain = await make({});
  const on = await make({});
  const sampled1 = await make({ staleSampleRate: 0.01, staleSampleConcurrency: 8 });
  const sampled01 = await make({ staleSampleRate: 0.001, staleSampleConcurrency: 8 });
  const metrics = new CacheMetrics({ cluster: false, worker: 'bench' });
  for (const c of [on, sampled1, sampled01]) metrics.add(c);
  const lru = new LRUCache<string, number>({ max: nKeys * 2 });
  for (const k of keys) lru.set(k, 1);

  const contenders: Contender[] = [
    { label: 'cachebus get, metrics off (baseline)', target: off, loop: makeLoop('t.get(keys[idx[i]], loader)'), samples: [] },
    { label: 'cachebus get, metrics off (A/A control)', target: offAgain, loop: makeLoop('t.get(keys[idx[i]], loader)'), samples: [] },
    { label: 'cachebus get, metrics on', target: on, loop: makeLoop('t.get(keys[idx[i]], loader)'), samples: [] },
    { label: 'cachebus get, metrics on + sampler 1 %', target: sampled1, loop: makeLoop('t.get(keys[idx[i]], loader)'), samples: [] },
    { label: 'cachebus get, metrics on + sampler 0.1 %', target: sampled01, loop: makeLoop('t.get(keys[idx[i]], loader)'), samples: [] },
    { label: 'bare lru-cache get (reference)', target: lru, loop: makeLoop('t.get(keys[idx[i]])'), samples: [] },
  ];
  const turn = (): Promise<void> => new Promise((res) => setImmediate(res));
  // CPU time of this process, not wall time: time the scheduler gives to the neighbours of a
  // shared machine does not count (GC and the sampler's checks on this thread do).
  const cpuNs = (): number => {
    const u = process.cpuUsage();
    return (u.user + u.system) * 1000;
  };
  const runOnce = async (c: Contender, n: number): Promise<number> => {
    const t0 = cpuNs();
    for (let from = 0; from < n; from += chunk) {
      c.loop(c.target, keys, idx, from, Math.min(n, from + chunk), loader);
      await turn();
    }
    return (n / (cpuNs() - t0)) * 1e9;
  };
  const scrapes: number[] = [];
  for (const c of contenders) await runOnce(c, Math.min(ops, 200_000)); // warm-up
  const ratios = new Map<Contender, number[]>(contenders.map((c) => [c, []]));
  for (let r = 0; r < rounds; r++) {
    const round = new Map<Contender, number>();
    for (let j = 0; j < contenders.length; j++) {
      const c = contenders[(j + r) % contenders.length]!;
      const hz = await runOnce(c, ops);
      c.samples.push(hz);
      round.set(c, hz);
    }
    for (const c of contenders) ratios.get(c)!.push(round.get(c)! / round.get(contenders[0]!)!);
    const t0 = process.hrtime.bigint();
    await metrics.metrics(); // off the timed loops, as Prometheus would scrape
    scrapes.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }

  console.log(`metrics-cost: ${ops.toLocaleString('en')} hits per round over ${nKeys.toLocaleString('en')} keys (uniform), chunks of ${chunk}, median of ${rounds} interleaved rounds, node ${process.version}`);
  console.log('contender                                  hits/CPU-s   ns/hit  vs baseline (median of paired ratios, p25-p75)');
  const q = (xs: number[], f: number): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * f)]!;
  for (const c of contenders) {
    const m = median(c.samples);
    const r = ratios.get(c)!;
    console.log(`${c.label.padEnd(42)} ${(m / 1e6).toFixed(2).padStart(8)} M ${(1e9 / m).toFixed(1).padStart(7)}  ${median(r).toFixed(3)}x (${q(r, 0.25).toFixed(2)}-${q(r, 0.75).toFixed(2)})`);
  }
  for (const [label, c] of [['1 %', sampled1], ['0.1 %', sampled01]] as const) {
    const s = c.staleSampler!.stats;
    console.log(`sampler ${label}: ${s.sampled} hits picked, ${s.fresh} fresh, ${s.stale} stale, ${s.skipped} skipped`);
  }
  console.log(`one scrape of CacheMetrics (3 caches): median ${median(scrapes).toFixed(2)} ms`);
  metrics.close();
  await Promise.all([off, offAgain, on, sampled1, sampled01].map((c) => c.close()));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
