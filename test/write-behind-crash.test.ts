import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { busKeys, writeBehindKeys } from '../bus/keys.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';
import { createItems, doubleApplied, ITEMS, itemsById, slowUrl } from './fixtures/wb-db.js';
import { WbProc } from './fixtures/wb-proc.js';

const NS = 'wb';
const N = 20_000;
const IDS = 5_000;
const WORKERS = 3;

let prefix: string;
let schema: TestSchema;
let redis: Redis;
const procs: WbProc[] = [];

beforeEach(async () => {
  prefix = randomPrefix();
  schema = await TestSchema.create();
  await createItems(schema);
  redis = new Redis(REDIS_URL);
});
afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.kill()));
  redis.disconnect();
  await cleanupPrefix(prefix);
  await schema.drop();
});

describe('write-behind: no lost write (I5) under kill -9', () => {
  it(`writes ${N} versioned rows from ${WORKERS} processes, kills a worker and a sidecar mid-flush; Postgres ends with every acknowledged write in its final version`, async () => {
    const flusherOptions = { redis: REDIS_URL, namespace: NS, prefix, pg: schema.url, leaseMs: 1500, sweepIntervalMs: 200, batchSize: 500 };
    const startSidecar = async (pg = schema.url): Promise<WbProc> => {
      const s = await WbProc.start('wb-sidecar', { ...flusherOptions, pg });
      procs.push(s);
      return s;
    };
    const s1 = await startSidecar(slowUrl(schema)); // each of its upserts takes 200 ms+
    const workerOptions = {
      cache: { redis: REDIS_URL, namespace: NS, prefix, maxEntries: 10_000 },
      entity: ITEMS,
      writeBehind: { pg: schema.url, flushDelayMs: 20 },
    };
    const workers = await Promise.all(Array.from({ length: WORKERS }, () => WbProc.start('wb-worker', workerOptions)));
    procs.push(...workers);

    // Every acknowledged write, as the parent learned of it: id -> highest acknowledged version and its value.
    const acked = new Map<string, { version: bigint; val: string }>();
    const ackedBy = workers.map(() => 0);
    workers.forEach((w, i) => w.on('acks', (chunk: [string, string, string][]) => {
      ackedBy[i]! += chunk.length;
      for (const [id, version, val] of chunk) {
        const v = BigInt(version);
        const cur = acked.get(id);
        if (cur === undefined || cur.version < v) acked.set(id, { version: v, val });
      }
    }));
    const perWorker = Math.ceil(N / WORKERS);
    const loads = workers.map((w, i) => w.call<{ acked: number }>('load', { count: perWorker, ids: IDS, concurrency: 32, tag: `w${i}` }, 120_000));
    loads[0]!.catch(() => undefined); // this one is killed

    // kill -9 sidecar 1 in the middle of a flush, and check it did hold claimed (leased) rows.
    await waitForEvent<{ total: number }>(s1, 'flushed', (p) => p.total >= 2000, 60_000);
    await s1.kill();
    const k = writeBehindKeys(busKeys(prefix, NS), 'items');
    expect(await redis.zcard(k.claims)).toBeGreaterThan(0); // batches the dead sidecar had claimed, unacknowledged
    // Two sidecars side by side from now on (I8), one of them the restarted one.
    const [s2, s3] = await Promise.all([startSidecar(), startSidecar()]);
    // kill -9 worker 0 in the middle of its writes.
    await until(() => ackedBy[0]! >= perWorker / 3, 60_000, 'worker 0 to be a third through');
    await workers[0]!.kill();

    const done = await Promise.all(loads.slice(1));
    expect(done.every((d) => d.acked === perWorker)).toBe(true);
    // Leases of the killed sidecar run out; the remaining sidecars drain everything.
    await until(async () => (await redis.hlen(k.overlay)) === 0 && (await redis.zcard(k.dirty)) === 0 && (await redis.zcard(k.claims)) === 0, 45_000, 'the overlay to drain');

    const db = await itemsById(schema.pool, schema.name);
    const problems: string[] = [];
    for (const [id, a] of acked) {
      const row = db.get(Number(id));
      if (row === undefined) problems.push(`${id}: missing`);
      else if (BigInt(row.version) < a.version) problems.push(`${id}: version ${row.version} older than acknowledged ${a.version}`);
      else if (BigInt(row.version) === a.version && row.val !== a.val) problems.push(`${id}: value ${row.val} != ${a.val}`);
    }
    expect(problems.slice(0, 10)).toEqual([]);
    expect(acked.size).toBeGreaterThan(IDS * 0.9);
    expect(ackedBy.reduce((x, y) => x + y, 0)).toBeGreaterThan(N * 0.7);
    expect(await doubleApplied(schema.pool, schema.name)).toEqual([]);
    const [st2, st3] = await Promise.all([s2.call<{ rowsFlushed: number }>('stats'), s3.call<{ rowsFlushed: number }>('stats')]);
    expect(st2.rowsFlushed + st3.rowsFlushed).toBeGreaterThan(0);
  });
});
