/**
 * Benchmark 1, `local-hit`: `cache.get` on a local hit vs a bare lru-cache `get` vs `Map.get`,
 * 100k keys, uniform and Zipf(0.99) access. Guards the promise that the hit path costs about
 * what a bare lru-cache get costs (target >= 0.8x lru-cache ops/s with metrics off, 0.7x on).
 *
 * `get` answers a local hit synchronously by design, so the loop does not await it.
 * Each contender gets its own loop function (compiled separately with `new Function`), so
 * V8's inline caches stay monomorphic for each and no contender pays for another's shape.
 * The baseline lru-cache is loaded as a separate module instance (`?baseline`): its code then
 * keeps its own type feedback, as in a process where lru-cache is used alone, instead of
 * sharing (and polluting) the feedback of the lru-cache copy inside cachebus. A third copy,
 * measured like the baseline, gives an A/A control: its ratio to the baseline is the noise
 * of the run (logged). Rounds are short and interleaved (rotating order) and the median round
 * is reported, which keeps a noisy neighbour on a shared machine from biasing one contender.
 * An informational row also compares with an lru-cache that shares cachebus's module copy
 * (and so its type feedback): see bench/README.md for why that one reads lower.
 */
import { LRUCache } from 'lru-cache';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { median, row, unavailable, type BenchContext, type Benchmark, type Row } from './harness.js';
import { uniformTrace, zipfTrace } from './zipf.js';

type Loop = (target: unknown, keys: string[], idx: Uint32Array, loader: () => number) => number;

function makeLoop(call: string): Loop {
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  return new Function('t', 'keys', 'idx', 'loader', `
    let s = 0;
    for (let i = 0; i < idx.length; i++) {
      const v = ${call};
      if (typeof v !== 'number') throw new Error('not a hit at ' + i);
      s += v;
    }
    return s;`) as Loop;
}

interface Contender {
  readonly label: string;
  readonly target: unknown;
  readonly loop: Loop;
  readonly samples: number[];
}

function measure(c: Contender, keys: string[], idx: Uint32Array, loader: () => number): number {
  const t0 = process.hrtime.bigint();
  c.loop(c.target, keys, idx, loader);
  const ns = Number(process.hrtime.bigint() - t0);
  return (idx.length / ns) * 1e9;
}

type Metrics = { ok: true; detach(): void } | { ok: false; why: string };

/**
 * Turns the issue-6 metrics on for `cache` (worker-runtime/metrics/metrics.ts: `cacheMetrics`), with
 * one scrape so every collector has run. Loaded by a computed specifier, so this benchmark
 * still builds and runs where that module is absent.
 */
async function attachMetrics(cache: Cache<number>): Promise<Metrics> {
  const spec = '../worker-runtime/metrics/metrics.js';
  let mod: { cacheMetrics?: (c: Cache<number>, o: { cluster: boolean }) => { metrics(): Promise<string>; close(): void } };
  try {
    mod = (await import(spec)) as typeof mod;
  } catch {
    return { ok: false, why: 'worker-runtime/metrics/metrics.ts not built' };
  }
  if (typeof mod.cacheMetrics !== 'function') return { ok: false, why: 'worker-runtime/metrics/metrics.ts has no cacheMetrics()' };
  const m = mod.cacheMetrics(cache, { cluster: false });
  await m.metrics();
  return { ok: true, detach: () => m.close() };
}

/** A fresh instance of the lru-cache module (own code, own type feedback). */
async function freshLruCache(tag: string): Promise<typeof LRUCache> {
  const mod = (await import(`${import.meta.resolve('lru-cache')}?${tag}`)) as typeof import('lru-cache');
  return mod.LRUCache;
}

async function buildCache(n: number, keys: string[]): Promise<Cache<number>> {
  const cache = await createCache<number>({ redis: false, namespace: 'bench', maxEntries: n });
  for (let i = 0; i < n; i++) await cache.set(keys[i]!, i);
  return cache;
}

export const localHit: Benchmark = {
  name: 'local-hit',
  summary: 'cache.get on a local hit vs lru-cache get vs Map.get (ops/s)',
  async run(ctx: BenchContext): Promise<Row[]> {
    const n = ctx.smoke ? 2_000 : 100_000;
    const accesses = ctx.smoke ? 20_000 : 250_000;
    const rounds = ctx.smoke ? 2 : 25;
    const keys = Array.from({ length: n }, (_, i) => `user:${i}:profile`);
    const map = new Map<string, number>();
    const lru = new (await freshLruCache('baseline'))<string, number>({ max: n });
    const control = new (await freshLruCache('control'))<string, number>({ max: n });
    const shared = new LRUCache<string, number>({ max: n });
    for (let i = 0; i < n; i++) {
      map.set(keys[i]!, i);
      lru.set(keys[i]!, i);
      control.set(keys[i]!, i);
      shared.set(keys[i]!, i);
    }
    const plain = await buildCache(n, keys);
    const metered = await buildCache(n, keys);
    const metrics = await attachMetrics(metered);
    const loader = (): number => -1;
    const rows: Row[] = [];
    try {
      for (const [dist, idx] of [
        ['uniform', uniformTrace(n, accesses, 7)],
        ['Zipf(0.99)', zipfTrace(n, 0.99, accesses, 7)],
      ] as const) {
        const contenders: Contender[] = [
          { label: 'Map', target: map, loop: makeLoop('t.get(keys[idx[i]])'), samples: [] },
          { label: 'lru-cache', target: lru, loop: makeLoop('t.get(keys[idx[i]])'), samples: [] },
          { label: 'cachebus', target: plain, loop: makeLoop('t.get(keys[idx[i]], loader)'), samples: [] },
          { label: 'control', target: control, loop: makeLoop('t.get(keys[idx[i]])'), samples: [] },
          { label: 'shared', target: shared, loop: makeLoop('t.get(keys[idx[i]])'), samples: [] },
        ];
        if (metrics.ok) contenders.push({ label: 'cachebus+metrics', target: metered, loop: makeLoop('t.get(keys[idx[i]], loader)'), samples: [] });
        ctx.log(`local-hit: ${dist}, ${n} keys, ${accesses} gets x ${rounds} rounds`);
        for (const c of contenders) measure(c, keys, idx, loader); // warm-up: let each loop optimise
        for (let r = 0; r < rounds; r++) {
          for (let j = 0; j < contenders.length; j++) {
            const c = contenders[(j + r) % contenders.length]!;
            c.samples.push(measure(c, keys, idx, loader));
          }
        }
        const [mapC, lruC, cbC, ctlC, sharedC, cbmC] = contenders.map((c) => median(c.samples));
        ctx.log(`local-hit: ${dist}: A/A control (a second lru-cache copy) / lru-cache = ${(ctlC! / lruC!).toFixed(2)}x (the noise of this run)`);
        const what = `get hit ops/s, ${dist}`;
        rows.push(row('local-hit', `${what}, metrics off`, 'ops/s', cbC!, 'lru-cache', lruC!, { ratioMin: 0.8 }));
        rows.push(row('local-hit', `${what}, metrics off`, 'ops/s', cbC!, 'Map', mapC!));
        rows.push(row('local-hit', `${what}, metrics off`, 'ops/s', cbC!, 'lru-cache, shared module', sharedC!));
        rows.push(
          metrics.ok
            ? row('local-hit', `${what}, metrics on`, 'ops/s', cbmC!, 'lru-cache', lruC!, { ratioMin: 0.7 })
            : unavailable('local-hit', `${what}, metrics on`, 'ops/s', 'lru-cache', metrics.why, { ratioMin: 0.7 }),
        );
      }
    } finally {
      if (metrics.ok) metrics.detach();
      await plain.close();
      await metered.close();
    }
    return rows;
  },
};
