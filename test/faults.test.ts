import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { busKeys } from '../bus/keys.js';
import { WorkerProc } from './helpers/procs.js';
import { ChaosProxy } from './helpers/proxy.js';
import { randomPrefix, TestRedis } from './helpers/redis.js';
import { until } from './helpers/wait.js';

let redis: TestRedis;
let raw: Redis;
let prefix: string;
let workers: WorkerProc[] = [];
let proxy: ChaosProxy | undefined;

const start = async (url: string, extra: object = {}): Promise<WorkerProc> => {
  const w = await WorkerProc.start({ redis: url, namespace: 'shop', prefix, maxEntries: 1000, maxStaleMs: 1000, ...extra });
  workers.push(w);
  return w;
};
const stats = (w: WorkerProc) => w.call<{ gaps: Record<string, number>; size: number; servable: boolean; clears: Record<string, number> }>('stats');

beforeEach(async () => {
  redis = await TestRedis.start();
  raw = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  raw.on('error', () => undefined);
  prefix = randomPrefix();
});

afterEach(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  workers = [];
  await proxy?.close();
  proxy = undefined;
  raw.disconnect();
  await redis.dispose();
});

describe('I2 no silent gap', () => {
  it('clears when the stream was trimmed past the cursor while the worker was suspended', async () => {
    const w = await start(redis.url);
    await w.call('get', { key: 'k', value: 1 });
    const stream = busKeys(prefix, 'shop').stream;
    process.kill(w.child.pid!, 'SIGSTOP');
    try {
      // Entries the worker never reads: trimmed to 1 by the time it wakes.
      for (let i = 0; i < 5; i++) await raw.xadd(stream, 'MAXLEN', '1', '*', 'v', '1', 'k', `["other${i}"]`);
    } finally {
      process.kill(w.child.pid!, 'SIGCONT');
    }
    const gap = await w.wait<{ cause: string }>('gap');
    expect(gap.cause).toBe('trimmed');
    const s = await stats(w);
    expect(s.gaps.trimmed).toBe(1);
    expect(s.clears.gap).toBe(1);
    expect(await w.call('peek', { key: 'k' })).toBeNull();
  });

  it('does not clear when a reader keeps up with trimming (no false gaps)', async () => {
    const a = await start(redis.url, { streamMaxLen: 5 });
    const b = await start(redis.url);
    await b.call('get', { key: 'keep', value: 1 });
    for (let i = 0; i < 50; i++) {
      const got = b.wait('received');
      await a.call('invalidate', { keys: [`x${i}`] });
      await got;
    }
    expect((await stats(b)).gaps).toEqual({ trimmed: 0, missing: 0, reset: 0, restart: 0 });
    expect(await b.call('peek', { key: 'keep' })).toBe(1);
  });

  it('clears when the stream is deleted', async () => {
    const a = await start(redis.url);
    const w = await start(redis.url);
    const got = w.wait('received');
    await a.call('invalidate', { keys: ['x'] });
    await got;
    await w.call('get', { key: 'k', value: 1 });
    const gap = w.wait<{ cause: string }>('gap');
    await raw.del(busKeys(prefix, 'shop').stream);
    expect((await gap).cause).toBe('missing');
    expect(await w.call('peek', { key: 'k' })).toBeNull();
  });

  it('clears when Redis is flushed and the stream re-created by new entries', async () => {
    const a = await start(redis.url);
    const w = await start(redis.url);
    let got = w.wait('received');
    await a.call('invalidate', { keys: ['x'] });
    await got;
    await w.call('get', { key: 'k', value: 1 });
    const gap = w.wait<{ cause: string }>('gap');
    await raw.flushall(); // our own throwaway server
    await a.call('invalidate', { keys: ['y'] });
    expect(['missing', 'reset']).toContain((await gap).cause);
    expect(await w.call('peek', { key: 'k' })).toBeNull();
    got = w.wait('received');
    await a.call('invalidate', { keys: ['z'] }); // and it keeps reading after the gap
    await got;
  });

  it('clears when Redis restarts (new run_id), then reconnects and serves again', async () => {
    const w = await start(redis.url, { maxStaleMs: 10_000 });
    await w.call('get', { key: 'k', value: 1 });
    const gap = w.wait<{ cause: string }>('gap', () => true, 20_000);
    await redis.restart();
    expect((await gap).cause).toBe('restart');
    expect(await w.call('peek', { key: 'k' })).toBeNull();
    await w.call('get', { key: 'k', value: 2 });
    expect(await w.call('peek', { key: 'k' })).toBe(2);
  });
});

describe('reconnect and I3 bounded staleness', () => {
  it('after CLIENT KILL the reader reconnects and resumes from its cursor: entries published meanwhile apply, no gap', async () => {
    const a = await start(redis.url);
    const w = await start(redis.url);
    await w.call('get', { key: 'k', value: 1 });
    await w.call('get', { key: 'other', value: 1 });
    const list = await raw.client('LIST');
    const ids = String(list).split('\n').filter((l) => l.includes('name=cachebus:shop:reader')).map((l) => /id=(\d+)/.exec(l)![1]!);
    expect(ids).toHaveLength(2); // one reader per worker process
    const reconnecting = w.wait<{ status: string }>('status', (s) => s.status === 'reconnecting');
    for (const id of ids) await raw.client('KILL', 'ID', id);
    await reconnecting;
    await a.call('invalidate', { keys: ['k'] });
    await until(async () => {
      const st = await stats(w);
      return st.servable && st.size === 1; // k dropped by the entry published during the reconnect, 'other' kept
    }, 10_000, 'the invalidation after reconnect');
    const s = await stats(w);
    expect(Object.values(s.gaps).reduce((x, y) => x + y, 0)).toBe(0);
    expect(await w.call('peek', { key: 'other' })).toBe(1); // not cleared: nothing was missed
  });

  it('during a silent partition longer than maxStaleMs, local entries are not served; served again once caught up', async () => {
    proxy = await ChaosProxy.start(redis.port);
    const w = await start(proxy.url, { maxStaleMs: 600 });
    expect(await w.call('get', { key: 'k', value: 'cached' })).toEqual({ value: 'cached', loaded: true });
    expect(await w.call('get', { key: 'k', value: 'fresh' })).toEqual({ value: 'cached', loaded: false });
    const off = w.wait<{ servable: boolean }>('servable', (e) => !e.servable);
    proxy.hold();
    await off;
    expect(await w.call('get', { key: 'k', value: 'fresh' })).toEqual({ value: 'fresh', loaded: true });
    expect(await w.call('peek', { key: 'k' })).toBeNull();
    const on = w.wait<{ servable: boolean }>('servable', (e) => e.servable);
    proxy.release();
    await on;
    expect(await w.call('get', { key: 'k', value: 'x' })).toEqual({ value: 'cached', loaded: false });
  });

  it('while Redis is down, nothing stale is served; after it is back the worker clears and serves', async () => {
    const w = await start(redis.url, { maxStaleMs: 600 });
    await w.call('get', { key: 'k', value: 'cached' });
    const off = w.wait<{ servable: boolean }>('servable', (e) => !e.servable);
    await redis.stop();
    await off;
    expect(await w.call('get', { key: 'k', value: 'fresh' })).toEqual({ value: 'fresh', loaded: true });
    const gap = w.wait<{ cause: string }>('gap', () => true, 20_000);
    const on = w.wait<{ servable: boolean }>('servable', (e) => e.servable, 20_000);
    await redis.start();
    await gap;
    await on;
    expect(await w.call('peek', { key: 'k' })).toBeNull();
  });
});
