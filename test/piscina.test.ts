import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { Piscina } from 'piscina';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createCache, InvalidOptionError, type Cache } from '../worker-runtime/index.js';
import { closeCachePool, createCachePool, threadStats } from '../worker-runtime/piscina/index.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until } from './helpers/wait.js';

const API = new URL('../dist/worker-runtime/piscina/entry.js', import.meta.url).href;

/**
 * A piscina task module: each thread has its own cache (threadCache). `get` reports which
 * thread answered and whether its loader ran; the loader answers `value`.
 */
const TASK = `
import { threadId, workerData } from 'node:worker_threads';
import { threadCache } from ${JSON.stringify(API)};
const cache = () => threadCache({ redis: workerData.redis, prefix: workerData.prefix, namespace: workerData.namespace, maxEntries: 100 });
export async function get({ key, value }) {
  const c = await cache();
  let loaded = false;
  const v = await c.get(key, () => { loaded = true; return value; });
  return { threadId, value: v, loaded };
}
export async function invalidate({ key }) {
  await (await cache()).invalidate(key);
  return threadId;
}
`;

let dir: string;
let filename: string;
let prefix: string;
let namespace: string;
let pool: Piscina | undefined;
let main: Cache<{}> | undefined;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cachebus-piscina-'));
  filename = join(dir, 'task.mjs');
  writeFileSync(filename, TASK);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeEach(() => {
  prefix = randomPrefix();
  namespace = `shop-${prefix}`; // unique, so CLIENT LIST names are this test's own
});
afterEach(async () => {
  if (pool) await closeCachePool(pool);
  pool = undefined;
  await main?.close();
  main = undefined;
  await cleanupPrefix(prefix);
});

type Got = { threadId: number; value: unknown; loaded: boolean };

const newPool = (): Piscina => {
  pool = createCachePool({ filename, minThreads: 2, maxThreads: 2, concurrentTasksPerWorker: 1, workerData: { redis: REDIS_URL, prefix, namespace } });
  return pool;
};

/** Runs `get` until both threads have answered; returns each thread's last answer. */
async function getOnBothThreads(p: Piscina, key: string, value: unknown): Promise<Map<number, Got>> {
  const seen = new Map<number, Got>();
  await until(async () => {
    const batch = await Promise.all([0, 1, 2, 3].map(() => p.run({ key, value }, { name: 'get' }) as Promise<Got>));
    for (const g of batch) if (!seen.has(g.threadId)) seen.set(g.threadId, g);
    return seen.size === 2;
  }, 10_000, 'both threads to answer');
  return seen;
}

describe('piscina integration', () => {
  it('each thread keeps its own cache; an invalidation from another process reaches both', async () => {
    const p = newPool();
    const first = await getOnBothThreads(p, 'product:1', 'v1');
    for (const g of first.values()) expect(g).toMatchObject({ value: 'v1', loaded: true });
    const warm = await getOnBothThreads(p, 'product:1', 'ignored');
    for (const g of warm.values()) expect(g).toMatchObject({ value: 'v1', loaded: false });

    main = await createCache({ redis: REDIS_URL, prefix, namespace, maxEntries: 10 });
    await main.invalidate('product:1');
    await until(async () => {
      const stats = await threadStats(p);
      return stats.length === 2 && stats.every((s) => s.stats.keysDropped === 1);
    }, 10_000, 'both threads to apply the invalidation');
    const after = await getOnBothThreads(p, 'product:1', 'v2');
    for (const g of after.values()) expect(g).toMatchObject({ value: 'v2', loaded: true });
  });

  it('a write in one thread invalidates the other thread\'s copy through the bus', async () => {
    const p = newPool();
    await getOnBothThreads(p, 'k', 'old');
    const writer = (await p.run({ key: 'k' }, { name: 'invalidate' })) as number;
    await until(async () => {
      const other = (await threadStats(p)).find((s) => s.threadId !== writer);
      return other !== undefined && other.stats.entriesReceived >= 1 && other.stats.keysDropped === 1;
    }, 10_000, 'the other thread to apply the invalidation');
    const after = await getOnBothThreads(p, 'k', 'new');
    for (const g of after.values()) expect(g).toMatchObject({ value: 'new', loaded: true });
  });

  it('threadStats reports each thread\'s cache; closeCachePool closes them (their Redis connections go away)', async () => {
    const p = newPool();
    await getOnBothThreads(p, 'a', 1);
    const stats = await threadStats(p);
    expect(stats).toHaveLength(2);
    expect(new Set(stats.map((s) => s.threadId)).size).toBe(2);
    for (const s of stats) expect(s).toMatchObject({ namespace, size: 1, servable: true });

    const admin = new Redis(REDIS_URL);
    try {
      const names = async (): Promise<number> =>
        ((await admin.client('LIST')) as string).split('\n').filter((l) => l.includes(` name=cachebus:${namespace}:`)).length;
      expect(await names()).toBe(4); // 2 threads × (command + reader)
      const final = await closeCachePool(p);
      pool = undefined;
      expect(final).toHaveLength(2);
      await until(async () => (await names()) === 0, 5_000, 'the threads\' connections to close');
    } finally {
      admin.disconnect();
    }
  });

  it("refuses atomics: 'sync' (an idle thread would stop applying invalidations), naming the option", () => {
    expect(() => createCachePool({ filename, atomics: 'sync' })).toThrow(InvalidOptionError);
    expect(() => createCachePool({ filename, atomics: 'sync' })).toThrow(/options\.atomics/);
  });
});
