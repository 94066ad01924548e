import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { busKeys } from '../bus/keys.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { RelayHostProc } from './fixtures/relay-driver.js';
import { ChaosProxy } from './helpers/proxy.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';

// Relay mode across processes: a host (test/fixtures/relay-host.ts) runs the hub and three
// caches, as node:cluster workers (IPC) or as worker threads (BroadcastChannel).

type Stats = { relayMode: string | false; servable: boolean; size: number; entriesReceived: number; gaps: Record<string, number> };

let prefix: string;
let ns: string;
let raw: Redis;
let host: RelayHostProc | undefined;
let publisher: Cache<{}> | undefined;
let proxy: ChaosProxy | undefined;

const MAX_STALE = 1000;
const start = async (mode: 'cluster' | 'threads', extra: { hub?: Record<string, unknown>; logKey?: string } = {}): Promise<RelayHostProc> => {
  host = await RelayHostProc.start({
    mode, workers: 3,
    cache: { redis: REDIS_URL, namespace: ns, prefix, maxEntries: 100, maxStaleMs: MAX_STALE },
    hub: { redis: REDIS_URL, blockMs: 200, minWorkers: 0, ...extra.hub },
    logKey: extra.logKey,
  });
  return host;
};
const external = async (): Promise<Cache<{}>> => {
  publisher ??= await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 10, relay: false });
  return publisher;
};
const readerConnections = async (): Promise<number> =>
  String(await raw.client('LIST')).split('\n').filter((l) => l.includes(`name=cachebus:${ns}:reader`)).length;

beforeEach(() => {
  prefix = randomPrefix();
  ns = `relay-${randomBytes(4).toString('hex')}`;
  raw = new Redis(REDIS_URL);
});

afterEach(async () => {
  await host?.stop();
  host = undefined;
  await publisher?.close();
  publisher = undefined;
  await proxy?.close();
  proxy = undefined;
  raw.disconnect();
  await cleanupPrefix(prefix);
});

describe.each(['cluster', 'threads'] as const)('relay hub with %s workers', (mode) => {
  it('one reader for the host; invalidations reach every other worker, not the publisher\'s own echo', async () => {
    const h = await start(mode);
    const stats = await h.all<Stats>('stats');
    expect(stats.map((s) => s.relayMode)).toEqual(Array(3).fill(mode === 'cluster' ? 'ipc' : 'broadcast'));
    expect(await readerConnections()).toBe(1);

    await h.all('get', { key: 'k', value: 1 });
    const got = [1, 2].map((i) => h.wait(i, 'received'));
    await h.call(0, 'invalidate', { keys: ['k'] });
    await Promise.all(got);
    expect(await h.all('peek', { key: 'k' })).toEqual([null, null, null]);

    const pub = await external();
    const all = h.waitAll('received');
    await pub.invalidate('other');
    await all;
    const after = await h.all<Stats>('stats');
    expect(after.map((s) => s.entriesReceived)).toEqual([1, 2, 2]); // worker 0 skipped its own entry
  });

  it('I2: a gap seen by the hub clears every worker', async () => {
    const h = await start(mode);
    const pub = await external();
    const warm = h.waitAll('received');
    await pub.invalidate('warm');
    await warm;
    await h.all('get', { key: 'k', value: 1 });
    const gaps = h.waitAll<{ cause: string }>('gap');
    await raw.del(busKeys(prefix, ns).stream);
    expect((await gaps).map((g) => g.cause)).toEqual(['missing', 'missing', 'missing']);
    expect(await h.all('peek', { key: 'k' })).toEqual([null, null, null]);
    // and the relay keeps working after the gap
    const again = h.waitAll('received');
    await pub.invalidate('after');
    await again;
  });

  it('I3: while the hub cannot reach Redis, no worker serves local entries; they serve again once it is back', async () => {
    proxy = await ChaosProxy.start(Number(new URL(REDIS_URL).port || 6379));
    const h = await start(mode, { hub: { redis: proxy.url } });
    await h.all('get', { key: 'k', value: 'cached' });
    const off = h.waitAll<{ servable: boolean }>('servable', (e) => !e.servable, 10_000);
    proxy.hold();
    await off;
    expect(await h.all('get', { key: 'k', value: 'fresh' })).toEqual(Array(3).fill({ value: 'fresh', loaded: true }));
    // an invalidation published meanwhile is delivered once the hub reads again
    const pub = await external();
    await pub.invalidate('k');
    const on = h.waitAll<{ servable: boolean }>('servable', (e) => e.servable, 10_000);
    const got = h.waitAll('received', () => true, 10_000);
    proxy.release();
    await on;
    await got;
    expect(await h.all('peek', { key: 'k' })).toEqual([null, null, null]);
    expect((await h.all<Stats>('stats')).map((s) => Object.values(s.gaps).reduce((a, b) => a + b, 0))).toEqual([0, 0, 0]);
  });

  it('hub closed: every worker stops serving at once; a new hub is a gap (clear), then they serve again', async () => {
    const h = await start(mode);
    await h.all('get', { key: 'k', value: 1 });
    const off = h.waitAll<{ servable: boolean }>('servable', (e) => !e.servable);
    await h.call('host', 'hubClose');
    await off;
    expect(await h.all('get', { key: 'k', value: 2 })).toEqual(Array(3).fill({ value: 2, loaded: true }));

    await h.call('host', 'hubRestart'); // closes the closed hub (no-op) and starts another
    const gaps = await h.waitAll<{ cause: string }>('gap', () => true, 10_000);
    expect(gaps.map((g) => g.cause)).toEqual(['restart', 'restart', 'restart']);
    await until(async () => (await h.all<Stats>('stats')).every((s) => s.servable), 10_000, 'workers to serve again');
    await h.all('get', { key: 'k', value: 3 });
    expect(await h.all('peek', { key: 'k' })).toEqual([3, 3, 3]);
  });
});

describe('relay hub in a node:cluster primary', () => {
  it("advises 'auto' caches to read directly below minWorkers, relays from there on", async () => {
    const few = await start('cluster', { hub: { minWorkers: 4 } });
    expect((await few.all<Stats>('stats')).map((s) => s.relayMode)).toEqual([false, false, false]);
    expect(await readerConnections()).toBe(3); // one per worker, none for the hub
    expect((await few.call<{ advisedDirect: number }>('host', 'hubStats')).advisedDirect).toBe(3);
    await few.stop();
    const many = await start('cluster', { hub: { minWorkers: 3 } });
    expect((await many.all<Stats>('stats')).map((s) => s.relayMode)).toEqual(['ipc', 'ipc', 'ipc']);
  });

  it('I3: a frozen primary (SIGSTOP) makes every worker stop serving within maxStaleMs; SIGCONT restores', async () => {
    const logKey = `${prefix}:servable-log`;
    const h = await start('cluster', { logKey });
    await h.all('get', { key: 'k', value: 1 });
    process.kill(h.child.pid!, 'SIGSTOP');
    let log: { servable: boolean; peekK: unknown; origin: string }[] = [];
    try {
      await until(async () => {
        log = (await raw.lrange(logKey, 0, -1)).map((s) => JSON.parse(s) as (typeof log)[number]);
        return new Set(log.filter((e) => !e.servable).map((e) => e.origin)).size === 3;
      }, 10_000, 'every worker to stop serving');
    } finally {
      process.kill(h.child.pid!, 'SIGCONT');
    }
    expect(log.filter((e) => !e.servable).map((e) => e.peekK)).toEqual([null, null, null]); // nothing served
    await until(async () => (await h.all<Stats>('stats')).every((s) => s.servable), 10_000, 'workers to serve again');
  });
});

describe('relay client in this process', () => {
  it('rejects with E_RELAY_UNAVAILABLE when no hub answers', async () => {
    const err = await createCache({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 1, relay: 'broadcast', connectTimeoutMs: 300 })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_RELAY_UNAVAILABLE' });
    expect(String((err as Error).message)).toMatch(/startRelayHub|options.relay/);
  });

  it('is refused (E_RELAY_REFUSED, naming the option) when maxStaleMs is below twice the hub blockMs', async () => {
    const { startRelayHub } = await import('../worker-runtime/cluster/index.js');
    const hub = startRelayHub({ redis: REDIS_URL, blockMs: 1000, advertise: false });
    try {
      await expect(createCache({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 1, relay: 'broadcast', maxStaleMs: 1500, connectTimeoutMs: 2000 }))
        .rejects.toMatchObject({ code: 'E_RELAY_REFUSED', message: expect.stringMatching(/maxStaleMs/) });
    } finally {
      await hub.close();
    }
  });

  it('rejects an unknown relay mode naming the option', async () => {
    await expect(createCache({ namespace: ns, maxEntries: 1, relay: 'nope' as never })).rejects.toThrow(/options\.relay/);
  });

  it("'auto' picks the hub of this process, else reads directly", async () => {
    const { startRelayHub } = await import('../worker-runtime/cluster/index.js');
    const direct = await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 10 });
    expect(direct.relayMode).toBe(false);
    await direct.close();
    const hub = startRelayHub({ redis: REDIS_URL, blockMs: 100 });
    try {
      const a = await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 10, maxStaleMs: 1000 });
      const b = await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 10, maxStaleMs: 1000 });
      expect([a.relayMode, b.relayMode]).toEqual(['broadcast', 'broadcast']);
      await b.get('k', () => 1);
      const got = waitForEvent(b, 'received');
      await a.invalidate('k');
      await got;
      expect(b.peek('k')).toBeUndefined();
      expect(a.stats.entriesReceived).toBe(0);
      await a.close();
      await b.close();
    } finally {
      await hub.close();
    }
    expect(process.env.CACHEBUS_RELAY).toBeUndefined();
  });

  it('runs as a sidecar service, with its readers in /health', async () => {
    const { relayHubService } = await import('../worker-runtime/cluster/index.js');
    const svc = relayHubService({ redis: REDIS_URL, blockMs: 100, advertise: false });
    await svc.start();
    try {
      const c = await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 10, maxStaleMs: 1000, relay: 'broadcast' });
      const h = svc.health() as { ok: boolean; detail: { topics: Record<string, { status: string }> } };
      expect(h.ok).toBe(true);
      expect(h.detail.topics[`${prefix}:${ns}`]?.status).toBe('ready');
      await c.close();
    } finally {
      await svc.stop();
    }
    expect(svc.health().ok).toBe(false);
  });

  it('I2: a missing relay message or another hub id clears the cache', async () => {
    const { startRelayHub } = await import('../worker-runtime/cluster/index.js');
    const { topicChannel, topicOf } = await import('../worker-runtime/internal.js');
    const { BroadcastChannel } = await import('node:worker_threads');
    const hub = startRelayHub({ redis: REDIS_URL, blockMs: 100, advertise: false });
    const ch = new BroadcastChannel(topicChannel(topicOf(prefix, ns)));
    try {
      const c = await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 10, maxStaleMs: 1000, relay: 'broadcast' });
      const gaps: string[] = [];
      c.on('gap', (g) => gaps.push(g.cause));
      await c.get('k', () => 1);
      // A message numbered beyond the next one from the same hub: messages were lost. (The
      // hub's next real message is out of sequence too: a second gap.)
      ch.postMessage({ t: 'cachebus-relay', topic: topicOf(prefix, ns), hub: hub.id, seq: 1e9, type: 'beat', at: 0 });
      await until(() => gaps.length === 2, 5000, 'two gaps');
      expect(gaps).toEqual(['missing', 'missing']);
      expect(c.peek('k')).toBeUndefined();
      // A message from another hub: whatever happened in between is unknown. (And back: again.)
      await until(() => c.servable, 5000, 'servable again');
      await c.get('k', () => 1);
      ch.postMessage({ t: 'cachebus-relay', topic: topicOf(prefix, ns), hub: 'another', seq: 1, type: 'beat', at: 0 });
      await until(() => gaps.length === 4, 5000, 'two more gaps');
      expect(gaps.slice(2)).toEqual(['restart', 'restart']);
      expect(c.peek('k')).toBeUndefined();
      await c.close();
    } finally {
      ch.close();
      await hub.close();
    }
  });
});
