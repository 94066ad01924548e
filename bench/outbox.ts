/**
 * The outbox bridge (trigger -> outbox table -> `cachebus sidecar` -> stream -> workers):
 *   - commit-to-drop latency: from an UPDATE's COMMIT (acknowledged to the client) to the drop
 *     of the row's key in a worker's cache, with the real sidecar CLI in its own process, with
 *     NOTIFY (default), and with polling only (an in-process relay, LISTEN off, every 250 ms).
 *     Baseline: cache.invalidate() -> drop in another
 *     cache (the bus alone).
 *   - drain throughput: 100,000 outbox rows (one bulk UPDATE) drained by one relay, batch 1000
 *     and 5000. Baseline: the same SELECT … FOR UPDATE SKIP LOCKED / DELETE / COMMIT loop with no
 *     publishing (Postgres alone).
 *   - trigger overhead: the bulk UPDATE of 100,000 rows with and without the triggers.
 *
 *   node dist/bench/outbox.js [--smoke]     (DATABASE_URL defaults to the local `test` database)
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { OutboxRelay } from '../bus/outbox/relay.js';
import { installTriggers, uninstallTriggers } from '../bus/outbox/triggers.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import {
  cleanupPrefix, median, percentile, randomPrefix, row, until, type BenchContext, type Benchmark, type Row,
  runIfMain,
} from './harness.js';

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const CLI = fileURLToPath(new URL('../cli/cachebus.js', import.meta.url));

/**
 * Times until `reader` applied the next entry from another origin (it drops `key`), one act at a
 * time: `fromCall` from when `act` was called, `fromAck` from when it resolved (for an UPDATE: its
 * COMMIT acknowledged), sorted. A round with no entry within 5 s is counted in `timeouts` (a
 * shared Redis may be flushed by someone else mid-run) and left out.
 */
async function latencies(reader: Cache<{}>, rounds: number, act: (i: number) => Promise<void>): Promise<{ fromCall: number[]; fromAck: number[]; timeouts: number }> {
  const fromCall: number[] = [];
  const fromAck: number[] = [];
  let timeouts = 0;
  for (let i = 0; i < rounds; i++) {
    let appliedAt = 0;
    let timer: NodeJS.Timeout | undefined;
    let on: (() => void) | undefined;
    const applied = new Promise<boolean>((resolve) => {
      on = (): void => { appliedAt = performance.now(); resolve(true); };
      reader.once('received', on);
      timer = setTimeout(() => resolve(false), 5_000);
    });
    const calledAt = performance.now();
    await act(i);
    const ackedAt = performance.now();
    const ok = await applied;
    clearTimeout(timer);
    if (!ok) {
      reader.off('received', on!);
      timeouts++;
      continue;
    }
    fromCall.push(appliedAt - calledAt);
    fromAck.push(Math.max(0, appliedAt - ackedAt));
  }
  const asc = (a: number, b: number): number => a - b;
  return { fromCall: fromCall.sort(asc), fromAck: fromAck.sort(asc), timeouts };
}

async function sidecar(ctx: { prefix: string; schema: string; redis: string }, extra: string[]): Promise<() => Promise<void>> {
  const child = spawn('node', [CLI, 'sidecar', '--namespace', 'bench', '--prefix', ctx.prefix, '--database', DATABASE_URL,
    '--redis', ctx.redis, '--port', '0', '--services', 'outbox', '--outbox-table', `${ctx.schema}.cachebus_outbox`, ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await until(() => out.includes('running'), 15_000, 'sidecar ready');
  return async () => { child.kill('SIGTERM'); await exited; };
}

export const outboxBenchmark: Benchmark = {
  name: 'outbox',
  summary: 'outbox bridge: commit-to-drop latency (median, p99) and drain rows/s vs the bus alone / Postgres alone',
  async run(ctx: BenchContext): Promise<Row[]> {
    const rounds = ctx.smoke ? 5 : 200;
    const pollRounds = ctx.smoke ? 3 : 40;
    const rows = ctx.smoke ? 5_000 : 100_000;
    const prefix = randomPrefix();
    const schema = `cbbench_${randomBytes(4).toString('hex')}`;
    const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2, options: `-c search_path=${schema}` });
    const opts = { redis: ctx.redisUrl, namespace: 'bench', prefix, maxEntries: 1000 };
    const writer = await createCache<{}>(opts);
    const reader = await createCache<{}>(opts);
    const entity = { name: 'products', table: `${schema}.products`, key: 'id', columns: [] };
    const name = 'outbox';
    try {
      await admin.query(`CREATE SCHEMA ${schema}`);
      await pool.query(`CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL);
        INSERT INTO products SELECT g, 'p' || g, 1 FROM generate_series(1, ${rows}) g;`);
      await pool.query('VACUUM ANALYZE products');

      // Trigger overhead on a bulk UPDATE (and it fills the outbox for the drain runs).
      let t0 = performance.now();
      await pool.query('UPDATE products SET price = price + 1');
      const bulkPlain = performance.now() - t0;
      await installTriggers(pool, entity, { namespace: 'bench' });
      const bulk = async (): Promise<number> => {
        const t = performance.now();
        await pool.query('UPDATE products SET price = price + 1');
        return performance.now() - t;
      };
      const bulkTriggered = await bulk();

      // Drain floor: Postgres alone (no publishing), batches of 1000.
      const count = async (): Promise<number> => Number((await pool.query('SELECT count(*) AS n FROM cachebus_outbox')).rows[0].n);
      t0 = performance.now();
      for (;;) {
        const c = await pool.connect();
        try {
          await c.query('BEGIN');
          const r = await c.query('SELECT id, key FROM cachebus_outbox WHERE namespace = $1 ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED', ['bench']);
          if (r.rows.length > 0) await c.query('DELETE FROM cachebus_outbox WHERE id = ANY($1::bigint[])', [r.rows.map((x) => x.id)]);
          await c.query('COMMIT');
          if (r.rows.length === 0) break;
        } finally {
          c.release();
        }
      }
      const floorRate = rows / ((performance.now() - t0) / 1000);

      const drain = async (batchSize: number): Promise<number> => {
        await bulk();
        const relay = new OutboxRelay({ pg: pool, redis: ctx.redisUrl, namespace: 'bench', prefix, outbox: 'cachebus_outbox', batchSize, listen: false });
        const t = performance.now();
        await relay.start();
        await until(() => relay.stats.rows >= rows, 300_000, 'outbox drained');
        const rate = rows / ((performance.now() - t) / 1000);
        await relay.stop();
        if ((await count()) !== 0) throw new Error('outbox not empty after the drain');
        return rate;
      };
      ctx.log('outbox: drain 1000');
      const rate1000 = await drain(1000);
      ctx.log('outbox: drain 5000');
      const rate5000 = await drain(5000);

      // Latency: the bus alone, then through the sidecar CLI (NOTIFY; then polling every 250 ms).
      ctx.log('outbox: latency');
      const key = 'products:42';
      const bus = await latencies(reader, rounds, async () => { await writer.invalidate(key); });
      const stop = await sidecar({ prefix, schema, redis: ctx.redisUrl }, []);
      const update = async (i: number): Promise<void> => { await pool.query('UPDATE products SET price = $1 WHERE id = 42', [i]); };
      const notify = await latencies(reader, rounds, update);
      await stop();
      // Polling only: an in-process relay with LISTEN off (its work shares this process's loop).
      const pollRelay = new OutboxRelay({ pg: DATABASE_URL, redis: ctx.redisUrl, namespace: 'bench', prefix, outbox: `${schema}.cachebus_outbox`, listen: false, pollMs: 250 });
      await pollRelay.start();
      const poll = await latencies(reader, pollRounds, update);
      await pollRelay.stop();

      const busBase = 'invalidate() call -> drop (bus alone)';
      return [
        row(name, `commit-to-drop median, sidecar CLI + NOTIFY (${rounds} updates)`, 'ms', median(notify.fromAck), busBase, median(bus.fromCall)),
        row(name, 'commit-to-drop p99, sidecar CLI + NOTIFY', 'ms', percentile(notify.fromAck, 99), busBase, percentile(bus.fromCall, 99)),
        row(name, 'UPDATE sent -> drop median, sidecar CLI + NOTIFY', 'ms', median(notify.fromCall), busBase, median(bus.fromCall)),
        row(name, 'rounds with no drop within 5 s (NOTIFY + polling runs)', 'rounds', notify.timeouts + poll.timeouts, 'bus alone', bus.timeouts),
        row(name, `commit-to-drop median, polling every 250 ms, no NOTIFY (${pollRounds} updates)`, 'ms', median(poll.fromAck), busBase, median(bus.fromCall)),
        row(name, 'commit-to-drop p99, polling every 250 ms, no NOTIFY', 'ms', percentile(poll.fromAck, 99), busBase, percentile(bus.fromCall, 99)),
        row(name, `drain rows/s, 1 relay, batch 1000 (${rows} rows)`, 'rows/s', rate1000, 'naive SELECT…LIMIT 1000/DELETE loop, no publish', floorRate),
        row(name, `drain rows/s, 1 relay, batch 5000 (${rows} rows)`, 'rows/s', rate5000, 'naive SELECT…LIMIT 1000/DELETE loop, no publish', floorRate),
        row(name, `bulk UPDATE of ${rows} rows with the triggers`, 'ms', bulkTriggered, 'same UPDATE, no triggers', bulkPlain),
      ];
    } finally {
      await uninstallTriggers(pool, entity).catch(() => undefined);
      await Promise.all([writer.close(), reader.close()]);
      await pool.end();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
      await admin.end();
      await cleanupPrefix(ctx.redisUrl, prefix);
    }
  },
};

await runIfMain(import.meta.url, outboxBenchmark);
