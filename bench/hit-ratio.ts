/**
 * Benchmark 6, `hit-ratio`: a Zipf trace replayed through each eviction policy cachebus
 * offers (lru, lfu, fifo, ttl) vs lru-cache, read-through style (get; on a miss, set).
 * Guards the policies' eviction logic: `lru` wraps lru-cache and must match it exactly;
 * the others show what choosing them costs or gains on a skewed workload. Informational:
 * the issue sets no target.
 */
import { LRUCache } from 'lru-cache';
import { createStore } from '../worker-runtime/internal.js';
import type { PolicyName } from '../worker-runtime/index.js';
import { row, type BenchContext, type Benchmark, type Row } from './harness.js';
import { zipfTrace } from './zipf.js';

interface Store { get(k: string): unknown; set(k: string, v: number): unknown }

function replay(store: Store, keys: readonly string[], trace: Uint32Array): number {
  let hits = 0;
  for (let i = 0; i < trace.length; i++) {
    const k = keys[trace[i]!]!;
    if (store.get(k) !== undefined) hits++;
    else store.set(k, 1);
  }
  return (hits / trace.length) * 100;
}

const POLICIES: readonly PolicyName[] = ['lru', 'lfu', 'fifo', 'ttl'];

export const hitRatio: Benchmark = {
  name: 'hit-ratio',
  summary: 'Zipf trace through each cachebus eviction policy vs lru-cache (hit %)',
  async run(ctx: BenchContext): Promise<Row[]> {
    const n = ctx.smoke ? 20_000 : 1_000_000;
    const requests = ctx.smoke ? 50_000 : 2_000_000;
    const size = ctx.smoke ? 200 : 10_000;
    const keys = Array.from({ length: n }, (_, i) => `k${i}`);
    const rows: Row[] = [];
    for (const s of [0.99, 0.8]) {
      ctx.log(`hit-ratio: Zipf(${s}), ${n} keys, ${requests} gets, cache ${size}`);
      const trace = zipfTrace(n, s, requests, 11);
      const floor = replay(new LRUCache<string, number>({ max: size }), keys, trace);
      const what = `hit %, Zipf(${s}) ${fmtCount(n)} keys, cache ${fmtCount(size)}`;
      for (const policy of POLICIES) {
        const store = createStore<number>(policy, { maxEntries: size, ttl: policy === 'ttl' ? 3_600_000 : undefined });
        rows.push(row('hit-ratio', `${what}, policy ${policy}`, '%', replay(store, keys, trace), 'lru-cache', floor));
      }
    }
    return rows;
  },
};

function fmtCount(n: number): string {
  return n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n);
}
