import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Cluster } from 'ioredis';
import { keySlot } from '../bus/cluster.js';
import { busKeys } from '../bus/keys.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { WorkerProc } from './helpers/procs.js';
import { randomPrefix } from './helpers/redis.js';
import { TestCluster } from './helpers/redis-cluster.js';
import { until, waitForEvent } from './helpers/wait.js';

// Redis Cluster, 3 masters, started by this file on free loopback ports.
const unsupported = TestCluster.unsupported();
if (unsupported) console.warn(`cluster tests skipped: ${unsupported}`);

let cluster: TestCluster;
let prefix: string;
let caches: Cache<{}>[] = [];
let workers: WorkerProc[] = [];
let clients: Cluster[] = [];

const open = async (namespace: string, extra: object = {}): Promise<Cache<{}>> => {
  const c = await createCache<{}>({ redis: cluster.seeds, namespace, prefix, maxEntries: 100, maxStaleMs: 2000, ...extra });
  caches.push(c);
  return c;
};

describe.skipIf(unsupported !== undefined)('Redis Cluster (3 masters)', () => {
  beforeAll(async () => {
    cluster = await TestCluster.start({ masters: 3 });
  });
  afterAll(async () => {
    await cluster?.dispose();
  });
  beforeEach(() => {
    prefix = randomPrefix();
  });
  afterEach(async () => {
    await Promise.all(caches.map((c) => c.close()));
    await Promise.all(workers.map((w) => w.stop()));
    for (const c of clients) c.disconnect();
    caches = [];
    workers = [];
    clients = [];
  });

  it('carries invalidations between caches given seed URLs', async () => {
    const a = await open('shop');
    const b = await open('shop');
    await b.get('k', () => 1);
    const got = waitForEvent(b, 'received');
    await a.invalidate('k');
    await got;
    expect(b.peek('k')).toBeUndefined();
    expect(b.stats.gaps).toEqual({ trimmed: 0, missing: 0, reset: 0, restart: 0 });
  });

  it("wake: 'pubsub' on a Cluster: hints arrive over the cluster's pub/sub, and the stream entry is still read and applied", async () => {
    const a = await open('hinted', { wake: 'pubsub' });
    const b = await open('hinted', { wake: 'pubsub' });
    // Subscribed: a hint only counts once the subscription is live, so retry a fresh key until one arrives.
    for (let i = 0; b.bus?.wakeStats?.hints === 0; i++) {
      if (i >= 50) throw new Error('no hint arrived on the Cluster');
      await b.get(`warm${i}`, () => 1);
      const got = waitForEvent(b, 'received');
      await a.invalidate(`warm${i}`);
      await got;
    }
    const hints = b.bus!.wakeStats!.hints;
    await b.get('k', () => 1);
    const received = waitForEvent<{ id: string }>(b, 'received');
    const [published] = await Promise.all([waitForEvent<{ ids: string[] }>(a, 'published'), a.invalidate('k')]);
    expect((await received).id).toBe(published.ids[0]);
    expect(b.peek('k')).toBeUndefined();
    await until(() => b.bus!.wakeStats!.hints > hints, 5000, "k's hint (it may come after the stream entry)");
    expect(b.stats.gaps).toEqual({ trimmed: 0, missing: 0, reset: 0, restart: 0 });
  });

  it('accepts an ioredis Cluster and leaves it open on close', async () => {
    const client = cluster.client();
    clients.push(client);
    const a = await createCache<{}>({ redis: client, namespace: 'shop', prefix, maxEntries: 10 });
    const b = await open('shop');
    await b.get('k', () => 1);
    const got = waitForEvent(b, 'received');
    await a.invalidate('k');
    await got;
    await a.close();
    expect(await client.ping()).toBe('PONG');
  });

  it('spreads namespaces over the masters (one hash tag per namespace) and each works', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `ns${i}`);
    const masters = new Set<number>();
    for (const ns of names) {
      const { stream, base } = busKeys(prefix, ns);
      expect(keySlot(stream)).toBe(keySlot(`${base}:anything`)); // all keys of a namespace in one slot
      masters.add(await cluster.masterOf(keySlot(stream)));
    }
    expect(masters.size).toBeGreaterThan(1);
    const pairs = await Promise.all(names.map(async (ns) => [await open(ns), await open(ns)] as const));
    await Promise.all(pairs.map(async ([a, b]) => {
      await b.get('k', () => 1);
      const got = waitForEvent(b, 'received');
      await a.invalidate('k');
      await got;
      expect(b.peek('k')).toBeUndefined();
    }));
    // the streams live where the slot map says
    for (const ns of names.slice(0, 3)) {
      const stream = busKeys(prefix, ns).stream;
      expect(await cluster.call(await cluster.masterOf(keySlot(stream)), 'XLEN', stream)).toBe(1);
    }
  });

  it('computes the same slots as Redis', async () => {
    const any = cluster.nodes[0]!.port;
    for (const key of ['foo', 'bar{tag}', '{user1000}.following', 'a{}b', '{}{x}', busKeys('p', 'n-1').stream]) {
      expect(keySlot(key)).toBe(await cluster.call(any, 'CLUSTER', 'KEYSLOT', key));
    }
  });

  it('I2: a worker that misses trimmed entries clears (gap rules unchanged on Cluster)', async () => {
    const w = await WorkerProc.start({ redis: cluster.seeds, namespace: 'shop', prefix, maxEntries: 100, maxStaleMs: 2000 });
    workers.push(w);
    await w.call('get', { key: 'k', value: 1 });
    const stream = busKeys(prefix, 'shop').stream;
    const port = await cluster.masterOf(keySlot(stream));
    process.kill(w.child.pid!, 'SIGSTOP');
    try {
      for (let i = 0; i < 5; i++) await cluster.call(port, 'XADD', stream, 'MAXLEN', '1', '*', 'v', '1', 'k', `["x${i}"]`);
    } finally {
      process.kill(w.child.pid!, 'SIGCONT');
    }
    expect((await w.wait<{ cause: string }>('gap')).cause).toBe('trimmed');
    expect(await w.call('peek', { key: 'k' })).toBeNull();
  });

  it('rejects bad seed lists with a typed error naming the option', async () => {
    await expect(createCache({ redis: ['http://127.0.0.1:1'], namespace: 'x', maxEntries: 1 })).rejects.toMatchObject({ code: 'E_INVALID_OPTION' });
    await expect(createCache({ redis: [], namespace: 'x', maxEntries: 1 })).rejects.toThrow(/options.redis/);
  });
});
