/**
 * Issue 11, "Coherence you can prove": one regression test per way a worker served a stale value
 * unnoticed. Each holds the reader or the loop (SIGSTOP, a blocked loop, a stalled proxy, a
 * held loader) instead of racing it.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createCache, PublishError, type Cache } from '../worker-runtime/index.js';
import { busKeys } from '../bus/keys.js';
import { appendArgs, publishScript } from '../bus/lua-append.js';
import { WorkerProc } from './helpers/procs.js';
import { ChaosProxy } from './helpers/proxy.js';
import { randomPrefix, TestRedis } from './helpers/redis.js';
import { until } from './helpers/wait.js';

let redis: TestRedis;
let raw: Redis;
let prefix: string;
let stream: string;
const workers: WorkerProc[] = [];
const caches: Cache<{}>[] = [];
let proxy: ChaosProxy | undefined;

type Stats = { gaps: Record<string, number>; size: number; servable: boolean; clears: Record<string, number>; badEntries: Record<string, number> };
const stats = (w: WorkerProc) => w.call<Stats>('stats');

async function worker(url: string, extra: object = {}): Promise<WorkerProc> {
  const w = await WorkerProc.start({ redis: url, namespace: 'shop', prefix, maxEntries: 10_000, maxStaleMs: 1000, ...extra });
  workers.push(w);
  return w;
}

async function cache(extra: Record<string, unknown> = {}): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: redis.url, namespace: 'shop', prefix, maxEntries: 10_000, ...extra });
  caches.push(c);
  return c;
}

/** Holds the process still for `ms` (the fault's length; nothing waits on it as a signal). */
function freeze(pid: number, ms: number, during: () => Promise<void>): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  const deadline = Date.now() + ms;
  return during().finally(async () => {
    while (Date.now() < deadline) await new Promise((r) => setTimeout(r, deadline - Date.now()));
    process.kill(pid, 'SIGCONT');
  });
}


beforeEach(async () => {
  redis = await TestRedis.start();
  raw = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  raw.on('error', () => undefined);
  prefix = randomPrefix();
  stream = busKeys(prefix, 'shop').stream;
});

afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
  await Promise.all(caches.splice(0).map((c) => c.close()));
  await proxy?.close();
  proxy = undefined;
  raw.disconnect();
  await redis.dispose();
});

describe('I2: continuity proven per entry, before it is applied', () => {
  /**
   * The worker must not have read X: its read is answered with X, but the answer is held in a
   * proxy and the connection cut, so it is lost; the stream is then replaced while the worker's
   * new connection is still held. Once released, the worker re-syncs against the new stream.
   */
  async function recreatedWhileCut(recreate: () => Promise<void>): Promise<WorkerProc> {
    proxy = await ChaosProxy.start(redis.port);
    const pub = await cache();
    await pub.invalidate('warmup'); // the stream exists, with its epoch, before the worker starts
    const w = await worker(proxy.url);
    await w.call('get', { key: 'k', value: 'old' });
    proxy.hold();
    await pub.invalidate('k'); // X: its delivery is held, then dropped with the connection
    proxy.cut();
    await raw.del(stream);
    await recreate();
    // Re-created with (entries the worker counted + L) entries, trimmed to L: entries-added -
    // length equals what the worker counted, and the end is past its cursor.
    await raw.xtrim(stream, 'MAXLEN', 3);
    proxy.release();
    return w;
  }

  it('1. a stream deleted and re-created with counts that balance the reader\'s is a gap, before any new entry applies', async () => {
    const pub = await cache();
    const w = await recreatedWhileCut(async () => { for (let i = 0; i < 4; i++) await pub.invalidate(`other:${i}`); });
    await w.wait('gap', () => true, 15_000);
    expect(await w.call('peek', { key: 'k' })).toBeNull();
    expect((await stats(w)).clears.gap).toBeGreaterThanOrEqual(1);
  });

  it('1b. the same when a foreign client (plain XADD) re-creates the stream', async () => {
    const w = await recreatedWhileCut(async () => { for (let i = 0; i < 4; i++) await raw.xadd(stream, '*', 'v', '1', 'k', JSON.stringify([`other:${i}`])); });
    await w.wait('gap', () => true, 15_000);
    expect(await w.call('peek', { key: 'k' })).toBeNull();
  });

  it('2. an unread entry deleted in the same step as a later one is added: the gap comes before the later entry applies', async () => {
    const w = await worker(redis.url);
    await w.call('get', { key: 'k', value: 'old' });
    await w.call('get', { key: 'later', value: 'x' });
    const events: string[] = [];
    w.on('gap', () => events.push('gap'));
    w.on('received', () => events.push('received'));
    // The worker sits in XREAD BLOCK; it is woken only after EXEC, when X is already gone.
    const tx = raw.multi();
    tx.evalsha(publishScript.sha, 1, stream, ...appendArgs([['v', '1', 'o', 't', 'k', '["k"]']], { kind: '' }));
    tx.eval(`local r = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) return redis.call('XDEL', KEYS[1], r[1][1])`, 1, stream);
    tx.evalsha(publishScript.sha, 1, stream, ...appendArgs([['v', '1', 'o', 't', 'k', '["later"]']], { kind: '' }));
    await raw.script('LOAD', publishScript.lua);
    const res = await tx.exec();
    expect(res?.every(([err]) => err === null)).toBe(true);
    await until(() => events.includes('received') && events.includes('gap'), 5000, 'gap and entry');
    expect(events.indexOf('gap')).toBeLessThan(events.indexOf('received'));
    expect(await w.call('peek', { key: 'k' })).toBeNull();
  });
});

describe('I3: a proof is as old as the read that produced it', () => {
  it('3. after a blocked event loop, the first synchronous read does not serve the old value', async () => {
    const c = await cache({ maxStaleMs: 300 });
    await c.get('k', () => 'old');
    expect(c.peek('k')).toBe('old');
    const until = Date.now() + 1200;
    while (Date.now() < until) { /* a synchronous block: no timer can run */ }
    expect(c.peek('k')).toBeUndefined();
    const v = c.get('k', () => 'fresh');
    expect(v).toBeInstanceOf(Promise); // not answered from the local copy
    expect(await v).toBe('fresh');
  });

  /** Records the order of `received` and `servable: true` events after a fault ends. */
  function order(w: WorkerProc): string[] {
    const events: string[] = [];
    w.on('received', () => events.push('received'));
    w.on('servable', (e: { servable: boolean }) => { if (e.servable) events.push('servable'); });
    return events;
  }

  it('4. a worker frozen (SIGSTOP) past maxStaleMs does not serve the old value on resume', async () => {
    // The worker's reader is the only stream reader on this server (the entry is published
    // through the library's script from a plain connection), so CLIENT LIST shows its state.
    const w = await worker(redis.url, { maxStaleMs: 500 }); // blockMs 125
    await w.call('get', { key: 'k', value: 'old' });
    const events = order(w);
    const readerBlocked = async (): Promise<boolean> =>
      String(await raw.call('CLIENT', 'LIST', 'TYPE', 'normal')).split('\n').some((l) => l.includes(' name=cachebus:shop:reader ') && / flags=\w*b/.test(l));
    await freeze(w.child.pid!, 1500, async () => {
      // First the worker's pending XREAD times out inside Redis (its empty answer waits in the
      // socket), then the invalidation: the answer processed on resume is older than it.
      await until(async () => !(await readerBlocked()), 1000, 'the frozen reader\'s XREAD to time out in Redis');
      await publishScript.run(raw, [stream], appendArgs([['v', '1', 'o', 'test', 'k', '["k"]']], { kind: '' }));
    });
    // The very first request after SIGCONT, whatever the reader has processed by then.
    expect(await w.call('peek', { key: 'k' })).toBeNull();
    await until(() => events.includes('servable'), 5000, 'serving again');
    expect(events[0]).toBe('received'); // caught up only once the invalidation was applied
    expect(await w.call('peek', { key: 'k' })).toBeNull();
  });

  it('5. a silent partition that heals: the reply stuck in the network proves nothing fresh', async () => {
    proxy = await ChaosProxy.start(redis.port);
    const pub = await cache();
    const w = await worker(proxy.url, { maxStaleMs: 500 }); // blockMs 125
    await w.call('get', { key: 'k', value: 'old' });
    const events = order(w);
    proxy.hold();
    const heldAt = Date.now();
    await w.wait<{ servable: boolean }>('servable', (e) => !e.servable, 5000);
    // The partition lasts longer than maxStaleMs after the last read was sent (and shorter than
    // the stall guard), then the invalidation comes: the held XREAD's empty answer is older.
    while (Date.now() < heldAt + 700) await new Promise((r) => setTimeout(r, heldAt + 700 - Date.now()));
    await pub.invalidate('k');
    proxy.release();
    expect(await w.call('peek', { key: 'k' })).toBeNull();
    await until(() => events.includes('servable'), 10_000, 'serving again');
    expect(events[0]).toBe('received');
    expect(await w.call('peek', { key: 'k' })).toBeNull();
    await w.call('get', { key: 'k2', value: 'v' });
    expect(await w.call('peek', { key: 'k2' })).toBe('v');
  });
});

describe('liveness and robustness', () => {
  it('8. a connection lost while the reader re-syncs does not leave it reconnecting forever', async () => {
    proxy = await ChaosProxy.start(redis.port);
    const pub = await cache();
    const w = await worker(proxy.url, { maxStaleMs: 600 });
    await w.call('get', { key: 'k', value: 'old' });
    // Stall, then drop every connection while the reader is re-syncing through the stalled proxy.
    proxy.hold();
    await w.wait('status', (s: { status: string }) => s.status === 'reconnecting', 10_000);
    for (let i = 0; i < 3; i++) {
      const before = proxy.accepted;
      proxy.cut();
      await until(() => proxy!.accepted > before, 10_000, 'the reader reconnected (its re-sync is now stuck in the held proxy)');
    }
    proxy.release();
    await until(async () => (await stats(w)).servable, 15_000, 'reader recovered');
    await w.call('get', { key: 'k', value: 'old' });
    const received = w.wait('received', () => true, 10_000); // listening before the entry can arrive
    await pub.invalidate('k');
    await received;
    expect(await w.call('peek', { key: 'k' })).toBeNull();
  });

  it('SCRIPT FLUSH under a running reader: no false gap, entries keep applying', async () => {
    const pub = await cache();
    const w = await worker(redis.url, { maxStaleMs: 1000 });
    await w.call('get', { key: 'k', value: 'old' });
    await w.call('get', { key: 'k2', value: 'old' });
    await raw.script('FLUSH');
    const received = w.wait('received', () => true, 10_000); // listening before the entry can arrive
    await pub.invalidate('k');
    await received;
    expect(await w.call('peek', { key: 'k' })).toBeNull();
    await pub.invalidate('k2');
    await until(async () => (await w.call('peek', { key: 'k2' })) === null, 10_000, 'k2 dropped');
    const s = await stats(w);
    expect(Object.values(s.gaps).reduce((a, b) => a + b, 0)).toBe(0);
  });

  it('close() returns even when the connection is stalled (a silent partition): QUIT is not waited for', async () => {
    proxy = await ChaosProxy.start(redis.port);
    const c = await createCache<{}>({ redis: proxy.url, namespace: 'shop', prefix, maxEntries: 10 });
    await c.get('k', () => 'v');
    proxy.hold();
    const started = Date.now();
    await c.close();
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('11. keys with quotes, backslashes and control characters are sized as encoded: every reader applies them', async () => {
    const a = await cache({ maxEntryBytes: 4096, maxKeyBytes: 256 });
    const b = await cache({ maxEntryBytes: 4096, maxKeyBytes: 256 });
    const keys = Array.from({ length: 600 }, (_, i) => `k"\\\u0001${i}"\\\u0002`);
    for (const k of keys) await b.get(k, () => 'old');
    expect(b.size).toBe(600);
    await a.invalidate(...keys);
    await until(() => b.size === 0 || b.stats.badEntries.oversized > 0, 10_000, 'all dropped');
    expect(b.stats.badEntries.oversized).toBe(0);
    expect(b.size).toBe(0);
  });

  it('11b. a key whose encoding is larger than maxKeyBytes is refused before any effect', async () => {
    const a = await cache({ maxKeyBytes: 64 });
    await expect(a.invalidate('\u0001'.repeat(20))).rejects.toMatchObject({ code: 'E_INVALID_KEY' });
  });

  it('12. a poisoned load does not erase a newer load\'s dependency edges', async () => {
    const c = await cache();
    let open1!: (v: string) => void, open2!: (v: string) => void;
    const l1 = Promise.resolve(c.get('d', () => new Promise<string>((r) => { open1 = r; }), { dependsOn: ['s'] }));
    await c.invalidate('d'); // poisons load 1
    const l2 = Promise.resolve(c.get('d', () => new Promise<string>((r) => { open2 = r; }), { dependsOn: ['s'] }));
    open1('from old s');
    await l1;
    await c.invalidate('s'); // must reach load 2 through its edge
    open2('from old s too');
    await l2;
    expect(c.peek('d')).toBeUndefined();
  });

  it('13. a throwing drop listener changes nothing: every key drops, here and in other workers', async () => {
    const a = await cache();
    const b = await cache();
    const errors: unknown[] = [];
    for (const c of [a, b]) {
      c.on('drop', () => { throw new Error('listener bug'); });
      c.on('error', (e) => errors.push(e));
      for (const k of ['k1', 'k2', 'k3']) await c.get(k, () => 'old');
    }
    await a.invalidate('k1', 'k2', 'k3');
    expect(['k1', 'k2', 'k3'].map((k) => a.peek(k))).toEqual([undefined, undefined, undefined]);
    await until(() => b.size === 0, 5000, 'b dropped all');
    expect(errors.length).toBeGreaterThanOrEqual(6);
  });

  it('14. a failed publish is kept and published once Redis answers; the publisher serves nothing meanwhile', async () => {
    await raw.call('ACL', 'SETUSER', 'app', 'on', '>pw', '~*', '&*', '+@all');
    const a = await createCache<{}>({ redis: { host: '127.0.0.1', port: redis.port, username: 'app', password: 'pw', maxRetriesPerRequest: 1 }, namespace: 'shop', prefix, maxEntries: 100 });
    caches.push(a);
    const b = await worker(redis.url);
    await b.call('get', { key: 'k', value: 'old' });
    await a.get('other', () => 'x');
    await raw.call('ACL', 'SETUSER', 'app', '-evalsha', '-eval', '-xadd');
    const err = await a.invalidate('k').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PublishError);
    expect(a.bus!.backlog).toBe(1);
    expect(a.servable).toBe(false);
    expect(a.peek('other')).toBeUndefined();
    const received = b.wait('received', () => true, 10_000);
    await raw.call('ACL', 'SETUSER', 'app', '+@all');
    await received;
    expect(await b.call('peek', { key: 'k' })).toBeNull();
    await until(() => a.bus!.backlog === 0 && a.servable, 10_000, 'backlog published');
  });

  it('14b. past maxBacklog the backlog becomes one namespace clear', async () => {
    const { Publisher } = await import('../bus/publisher.js');
    const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    client.on('error', () => undefined);
    const flags: boolean[] = [];
    const p = new Publisher(client, { stream, origin: 'o', maxEntryBytes: 65_536, streamMaxLen: 0, maxBacklog: 3, onBacklog: (b) => flags.push(b) });
    await raw.call('ACL', 'SETUSER', 'default', '-evalsha', '-eval');
    try {
      await expect(p.publish({ keys: ['a', 'b', 'c', 'd'] })).rejects.toBeInstanceOf(PublishError);
      expect(p.backlog).toBe(1); // one clear
    } finally {
      await raw.call('ACL', 'SETUSER', 'default', '+@all');
    }
    await until(() => p.backlog === 0, 10_000, 'clear published');
    const entries = await raw.xrange(stream, '-', '+');
    expect(entries.some(([, f]) => f.includes('c'))).toBe(true);
    expect(flags).toEqual([true, false]);
    p.close();
    client.disconnect();
  });
});

