import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { keySlot } from '../bus/cluster.js';
import { busKeys } from '../bus/keys.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { WorkerProc } from './helpers/procs.js';
import { randomPrefix } from './helpers/redis.js';
import { TestCluster } from './helpers/redis-cluster.js';
import { until } from './helpers/wait.js';

// Redis Cluster, 3 masters + 3 replicas, started by this file; failover of the master that
// holds a namespace's stream, by CLUSTER FAILOVER TAKEOVER and by kill -9.
const unsupported = TestCluster.unsupported();
if (unsupported) console.warn(`cluster failover tests skipped: ${unsupported}`);

type Stats = { gaps: Record<string, number>; size: number; servable: boolean };

let cluster: TestCluster;
let prefix: string;
let publisher: Cache<{}> | undefined;
let workers: WorkerProc[] = [];

const worker = async (extra: object = {}): Promise<WorkerProc> => {
  const w = await WorkerProc.start({ redis: cluster.seeds, namespace: 'shop', prefix, maxEntries: 100, maxStaleMs: 3000, ...extra });
  workers.push(w);
  return w;
};
const stats = (w: WorkerProc): Promise<Stats> => w.call<Stats>('stats');
const gapCount = (s: Stats): number => Object.values(s.gaps).reduce((a, b) => a + b, 0);

/** Publishes an invalidation and waits until every worker received it. */
async function roundTrip(key: string, ws: WorkerProc[], timeoutMs = 15_000): Promise<void> {
  const got = ws.map((w) => w.wait('received', () => true, timeoutMs));
  await publisher!.invalidate(key);
  await Promise.all(got);
}

describe.skipIf(unsupported !== undefined)('Redis Cluster failover (3 masters, 3 replicas)', () => {
  beforeAll(async () => {
    cluster = await TestCluster.start({ masters: 3, replicas: 1, nodeTimeoutMs: 1000 });
  });
  afterAll(async () => {
    await cluster?.dispose();
  });
  beforeEach(async () => {
    prefix = randomPrefix();
    publisher = await createCache<{}>({ redis: cluster.seeds, namespace: 'shop', prefix, maxEntries: 10, maxStaleMs: 3000 });
    publisher.on('error', () => undefined);
  });
  afterEach(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    workers = [];
    await publisher?.close();
    publisher = undefined;
  });

  it('TAKEOVER by a replica that lacks the newest entries: readers that read them and readers that did not both clear, then keep reading', async () => {
    const stream = busKeys(prefix, 'shop').stream;
    const slot = keySlot(stream);
    const a = await worker(); // keeps reading
    const b = await worker(); // suspended across the failover
    await a.call('get', { key: 'k', value: 1 });
    await b.call('get', { key: 'k', value: 1 });
    await roundTrip('warm', [a, b]);
    const master = await cluster.masterOf(slot);
    const [replica] = await cluster.replicasOf(master);
    expect(replica).toBeDefined();
    await cluster.call(master, 'WAIT', 1, 5000); // the replica has everything so far

    process.kill(b.child.pid!, 'SIGSTOP');
    try {
      // An entry the master acknowledges but never replicates: what a failover can lose.
      const lostA = a.wait('received');
      await cluster.call(master, 'EVAL',
        "redis.set_repl(redis.REPL_NONE); return redis.call('XADD', KEYS[1], '*', 'v', '1', 'k', ARGV[1])",
        1, stream, '["lost"]');
      await lostA;
      const r = new Redis({ host: '127.0.0.1', port: replica!, lazyConnect: true });
      await r.connect();
      await r.call('READONLY');
      expect(await r.xlen(stream)).toBe(1); // 'warm' only
      r.disconnect();

      const gapA = a.wait<{ cause: string; detail: string }>('gap', () => true, 20_000);
      await cluster.call(replica!, 'CLUSTER', 'FAILOVER', 'TAKEOVER');
      await until(async () => (await cluster.masterOf(slot)) === replica, 20_000, 'the replica to serve the slot');
      expect((await gapA).cause).toBe('restart');
      expect(await a.call('peek', { key: 'k' })).toBeNull();
    } finally {
      process.kill(b.child.pid!, 'SIGCONT');
    }
    const gapB = await b.wait<{ cause: string }>('gap', () => true, 20_000);
    expect(gapB.cause).toBe('restart');
    expect(await b.call('peek', { key: 'k' })).toBeNull();

    // Both keep reading from the new master, with no further gaps.
    await cluster.waitHealthy();
    await a.call('get', { key: 'k2', value: 1 });
    await roundTrip('k2', [a, b]);
    expect(await a.call('peek', { key: 'k2' })).toBeNull();
    expect(gapCount(await stats(a))).toBe(1);
    expect(gapCount(await stats(b))).toBe(1);
  });

  it('kill -9 of the master: no stale serving while the slot has no master, then reconnect to the promoted replica and clear', async () => {
    const stream = busKeys(prefix, 'shop').stream;
    const slot = keySlot(stream);
    const w = await worker({ maxStaleMs: 1000 });
    await w.call('get', { key: 'k', value: 'cached' });
    await roundTrip('warm', [w]);
    const master = await cluster.masterOf(slot);
    const [replica] = await cluster.replicasOf(master);
    expect(replica).toBeDefined();

    const off = w.wait<{ servable: boolean }>('servable', (e) => !e.servable, 20_000);
    const gap = w.wait<{ cause: string }>('gap', () => true, 30_000);
    await cluster.kill(master);
    await off; // I3: the reader cannot catch up, so local entries stop being served
    expect(await w.call('get', { key: 'k', value: 'fresh' })).toEqual({ value: 'fresh', loaded: true });
    expect((await gap).cause).toBe('restart');
    await until(async () => (await cluster.masterOf(slot)) === replica, 30_000, 'the replica to be promoted');
    await until(async () => (await stats(w)).servable, 30_000, 'the worker to serve again');
    expect(await w.call('peek', { key: 'k' })).toBeNull();
    await w.call('get', { key: 'k', value: 'new' });
    await roundTrip('k', [w], 30_000);
    expect(await w.call('peek', { key: 'k' })).toBeNull();
  });
});
