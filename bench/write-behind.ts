/**
 * Benchmark 4, write-behind (issue 4). Measures, in ONE run on the same table and rows:
 * - the four upsert methods of the flusher (json_populate_recordset, unnest, multi-row VALUES,
 *   COPY to a staging table), insert and update, 1 connection, batches of 1000;
 * (3 interleaved rounds of 50k rows each; medians, since the machine is shared and noisy)
 * - write() acknowledgement latency (p50, p99), one write at a time, and acknowledged writes/s
 *   with 64 in flight;
 * - the flusher draining a backlog (claim → upsert → compare-and-delete), rows/s;
 * - baselines: the raw batched upsert with plain pg (the flusher's method, batch size and number
 *   of connections, no Redis), and the same writes done write-through row by row (one
 *   autocommit upsert + cache.set each), one at a time and 64 in flight.
 * Run: `node dist/bench/write-behind.js [--smoke]`, or `cachebus bench write-behind`.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { defineEntity } from '../bus/entities.js';
import { Flusher } from '../bus/write-behind/flusher.js';
import { kFlusherDefaults } from '../bus/write-behind/flusher-options.js';
import { makeUpsert, UPSERT_METHODS, type UpsertMethod } from '../bus/write-behind/upsert.js';
import type { PendingRow } from '../bus/write-behind/codec.js';
import { createCache } from '../worker-runtime/index.js';
import { writeBehind } from '../worker-runtime/write-behind/write-behind.js';
import { cleanupPrefix, median, nowNs, percentile, randomPrefix, row, runIfMain, type BenchContext, type Benchmark, type Row } from './harness.js';

const DEF = { name: 'bench_items', version: 'version', columns: ['doc'] } as const;
const NAME = 'write-behind';

const doc = (i: number): Record<string, unknown> => ({ sku: `SKU-${i}`, title: `item number ${i}`, price: i % 1000, tags: ['a', 'b'], stock: i % 17 });

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = nowNs();
  await fn();
  return (nowNs() - t0) / 1e9;
}

/** Runs `fn(i)` for i in [0, n) with `inFlight` calls at a time; returns rows/s. */
async function parallel(n: number, inFlight: number, fn: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const s = await timed(async () => {
    await Promise.all(Array.from({ length: inFlight }, async () => {
      while (next < n) await fn(next++);
    }));
  });
  return n / s;
}

export const writeBehindBenchmark: Benchmark = {
  name: NAME,
  summary: 'write() ack latency and flush rows/s into Postgres vs raw batched upsert and write-through',
  async run(ctx: BenchContext): Promise<Row[]> {
    const big = ctx.smoke ? 2_000 : 50_000;
    const latN = ctx.smoke ? 300 : 5_000;
    const wtN = ctx.smoke ? 1_000 : 20_000;
    const schema = `cbbench_wb_${randomBytes(4).toString('hex')}`;
    const base = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
    const u = new URL(base);
    u.searchParams.set('options', `-c search_path=${schema}`);
    const url = u.toString();
    const pool = new pg.Pool({ connectionString: url, max: 8 });
    const prefix = randomPrefix();
    const rows: Row[] = [];
    const table = 'CREATE TABLE bench_items (id int PRIMARY KEY, version bigint NOT NULL, doc jsonb NOT NULL)';
    const reset = async (): Promise<void> => { await pool.query('TRUNCATE bench_items'); await pool.query('VACUUM ANALYZE bench_items'); };
    await pool.query(`CREATE SCHEMA ${schema}`);
    try {
      await pool.query(table);
      const entity = defineEntity(DEF);
      const pending = (i: number, v: number): PendingRow => ({ id: String(i), version: String(v), json: JSON.stringify({ id: i, doc: doc(i) }) });
      const batches = (v: number, size = 1000): PendingRow[][] => {
        const out: PendingRow[][] = [];
        for (let i = 0; i < big; i += size) out.push(Array.from({ length: Math.min(size, big - i) }, (_, j) => pending(i + j, v)));
        return out;
      };

      // 1. Upsert methods, 1 connection; rounds interleaved, medians reported (the machine is shared).
      const rounds = ctx.smoke ? 1 : 3;
      const methodRuns = new Map<UpsertMethod, { insert: number[]; update: number[] }>(UPSERT_METHODS.map((m) => [m, { insert: [], update: [] }]));
      for (let r = 0; r < rounds; r++) {
        for (const m of UPSERT_METHODS) {
          await reset();
          const up = makeUpsert(entity, m);
          const ins = batches(1);
          const upd = batches(2);
          methodRuns.get(m)!.insert.push(big / await timed(async () => { for (const b of ins) await up(pool, b); }));
          methodRuns.get(m)!.update.push(big / await timed(async () => { for (const b of upd) await up(pool, b); }));
        }
      }
      const methodRate = (m: UpsertMethod, what: 'insert' | 'update'): number => median(methodRuns.get(m)![what]);
      for (const m of UPSERT_METHODS) {
        ctx.log(`  upsert ${m}: insert ${Math.round(methodRate(m, 'insert'))} rows/s, update ${Math.round(methodRate(m, 'update'))} rows/s (median of ${rounds})`);
        rows.push(row(NAME, `upsert ${m}, insert, batch 1000`, 'rows/s', methodRate(m, 'insert'), 'upsert json (default), insert', methodRate('json', 'insert')));
        rows.push(row(NAME, `upsert ${m}, update, batch 1000`, 'rows/s', methodRate(m, 'update'), 'upsert json (default), update', methodRate('json', 'update')));
      }

      // 2-4, interleaved per round: the raw batched upsert floor (plain pg, the flusher's method,
      // batch size and number of connections, no Redis); write() latency and acks/s (no flusher);
      // then the flusher draining that backlog (claim -> upsert -> compare-and-delete).
      const cache = await createCache<{}>({ redis: ctx.redisUrl, namespace: 'bench', prefix, maxEntries: 200_000 });
      const items = await writeBehind(cache, DEF, { pg: url, maxPending: 10_000_000, flushDelayMs: 100 });
      const rawRates: number[] = [];
      const ackRates: number[] = [];
      const flushRates: number[] = [];
      const lat: number[] = [];
      const rawUp = makeUpsert(entity, 'json');
      // One long-lived flusher, as in a sidecar (its pool stays warm); sweeps and ticks off, so it
      // works only when drainAll() is timed.
      const flusher = await Flusher.open({ redis: ctx.redisUrl, namespace: 'bench', prefix, pg: url, entities: [DEF], queueConcurrency: 0, sweepIntervalMs: 3_600_000 });
      try {
      for (let r = 0; r < rounds; r++) {
        await reset();
        const rawBatches = batches(1, kFlusherDefaults.batchSize);
        let bi = 0;
        rawRates.push(big / await timed(async () => {
          await Promise.all(Array.from({ length: kFlusherDefaults.concurrency }, async () => {
            while (bi < rawBatches.length) await rawUp(pool, rawBatches[bi++]!);
          }));
        }));
        await reset();
        for (let i = 0; i < latN; i++) {
          const t0 = nowNs();
          await items.write({ id: i, doc: doc(i) });
          lat.push((nowNs() - t0) / 1e3);
        }
        ackRates.push(await parallel(big, 64, (i) => items.write({ id: i, doc: doc(i) })));
        await new Promise((res) => setTimeout(res, 150)); // let the flush delay pass: every row is due
        flushRates.push(big / await timed(() => flusher.drainAll()));
        const inPg = Number((await pool.query('SELECT count(*) FROM bench_items')).rows[0].count);
        if (inPg !== big) throw new Error(`flusher left ${big - inPg} rows unwritten`);
        ctx.log(`  round ${r + 1}: raw ${Math.round(rawRates[r]!)} rows/s, flusher ${Math.round(flushRates[r]!)} rows/s, ${Math.round(ackRates[r]!)} acks/s`);
      }
      } finally {
        await flusher.close();
      }
      lat.sort((a, b) => a - b);
      const rawRate = median(rawRates);
      const flushRate = median(flushRates);
      const ackRate = median(ackRates);
      ctx.log(`  write(): p50 ${percentile(lat, 50).toFixed(0)} µs, p99 ${percentile(lat, 99).toFixed(0)} µs (${lat.length} writes); ${Math.round(ackRate)} acks/s with 64 in flight`);
      await items.close();
      await cache.close();

      // 5. Baseline: write-through row by row (autocommit upsert with the version guard, then cache.set).
      await reset();
      const wtCache = await createCache<{}>({ redis: ctx.redisUrl, namespace: 'bench-wt', prefix, maxEntries: 200_000 });
      const one = `INSERT INTO bench_items AS cur (id, version, doc) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, doc = EXCLUDED.doc WHERE cur.version < EXCLUDED.version`;
      let ver = 1;
      const writeThrough = async (i: number): Promise<void> => {
        const d = doc(i);
        await pool.query({ name: 'bench_wt', text: one, values: [i, ver++, d] });
        await wtCache.set(`bench_items:${i}`, { id: i, doc: d });
      };
      const wtLat: number[] = [];
      for (let i = 0; i < latN; i++) {
        const t0 = nowNs();
        await writeThrough(i);
        wtLat.push((nowNs() - t0) / 1e3);
      }
      wtLat.sort((a, b) => a - b);
      const wtRate = await parallel(wtN, 64, (i) => writeThrough(i));
      await wtCache.close();
      ctx.log(`  write-through: p50 ${percentile(wtLat, 50).toFixed(0)} µs, p99 ${percentile(wtLat, 99).toFixed(0)} µs; ${Math.round(wtRate)} rows/s with 64 in flight`);

      rows.push(
        row(NAME, 'write() ack latency p50', 'µs', percentile(lat, 50), 'write-through row by row p50', percentile(wtLat, 50), { ratioMax: 1 }),
        row(NAME, 'write() ack latency p99', 'µs', percentile(lat, 99), 'write-through row by row p99', percentile(wtLat, 99)),
        row(NAME, 'write() acks/s, 64 in flight', 'rows/s', ackRate, 'write-through row by row, 64 in flight', wtRate, { ratioMin: 10 }),
        row(NAME, 'flush rows/s', 'rows/s', flushRate, 'raw batched upsert (floor)', rawRate, { ratioMin: 0.7 }),
        row(NAME, 'flush rows/s', 'rows/s', flushRate, 'row-by-row write-through', wtRate, { ratioMin: 10 }),
      );
      return rows;
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
      await pool.end();
      await cleanupPrefix(ctx.redisUrl, prefix);
    }
  },
};

export const benchmark = writeBehindBenchmark;

await runIfMain(import.meta.url, writeBehindBenchmark);
