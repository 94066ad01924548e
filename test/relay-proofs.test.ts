import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BroadcastChannel } from 'node:worker_threads';
import { Redis } from 'ioredis';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { startRelayHub, type RelayHub } from '../worker-runtime/cluster/index.js';
import { RelayClient, topicChannel, topicOf } from '../worker-runtime/internal.js';
import type { ReaderHandlers } from '../bus/reader.js';
import { RelayHostProc } from './fixtures/relay-driver.js';
import { ChaosProxy } from './helpers/proxy.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';

// Issue 11 through the relay: a proof is as old as the hub's read (#6), a closed hub stops its
// caches at once (#7), each cache's own secret (#9), an open 'auto' cache stays subscribed (#10).

type Stats = { relayMode: string | false; servable: boolean; entriesReceived: number };
type LogRec = { servable: boolean; peekK: unknown; origin: string; at: number };

let prefix: string;
let ns: string;
let raw: Redis;
let host: RelayHostProc | undefined;
let publisher: Cache<{}> | undefined;
let proxy: ChaosProxy | undefined;
const hubs: RelayHub[] = [];
const caches: Cache<{}>[] = [];

const MAX_STALE = 1000;
const start = async (mode: 'cluster' | 'threads', extra: { hub?: Record<string, unknown>; cache?: Record<string, unknown>; logKey?: string } = {}): Promise<RelayHostProc> => {
  host = await RelayHostProc.start({
    mode, workers: 3,
    cache: { redis: REDIS_URL, namespace: ns, prefix, maxEntries: 100, maxStaleMs: MAX_STALE, ...extra.cache },
    hub: { redis: REDIS_URL, blockMs: 200, minWorkers: 0, ...extra.hub },
    logKey: extra.logKey,
  });
  return host;
};
const external = async (): Promise<Cache<{}>> => {
  publisher ??= await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 10, relay: false });
  return publisher;
};
const hub = (o: Parameters<typeof startRelayHub>[0] = {}): RelayHub => {
  const h = startRelayHub({ redis: REDIS_URL, blockMs: 100, advertise: false, ...o });
  hubs.push(h);
  return h;
};
const cache = async (o: Record<string, unknown> = {}): Promise<Cache<{}>> => {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 10, maxStaleMs: MAX_STALE, relay: 'broadcast', connectTimeoutMs: 3000, ...o });
  caches.push(c);
  return c;
};

/** Redis' view of one client: its flags ('b' while blocked in XREAD). */
const clientFlags = async (id: string): Promise<string> => /flags=(\S+)/.exec(String(await raw.client('LIST', 'ID', id)))?.[1] ?? '';
/** Linux process state letter ('T' once SIGSTOP took effect). */
const procState = (pid: number): string => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] ?? '?';
const readLog = async (key: string): Promise<LogRec[]> => (await raw.lrange(key, 0, -1)).map((s) => JSON.parse(s) as LogRec);

beforeEach(() => {
  prefix = randomPrefix();
  ns = `relayp-${randomBytes(4).toString('hex')}`;
  raw = new Redis(REDIS_URL);
});

afterEach(async () => {
  if (host?.child.pid !== undefined) try { process.kill(host.child.pid, 'SIGCONT'); } catch { /* gone */ }
  await host?.stop();
  host = undefined;
  for (const c of caches.splice(0)) await c.close();
  for (const h of hubs.splice(0)) await h.close();
  await publisher?.close();
  publisher = undefined;
  await proxy?.close();
  proxy = undefined;
  raw.disconnect();
  await cleanupPrefix(prefix);
});

describe('#6 a frozen hub: a late reply is an old proof, never a fresh beat', () => {
  it('SIGSTOP the primary while its XREAD times out, invalidate, SIGCONT: no worker serves the old value on resume', async () => {
    const logKey = `${prefix}:servable-log`;
    // beatMs ~0: every proof is sent, so no rate limit can hide the late reply's beat (with the
    // default, a hello-forced beat just before it may suppress it by chance).
    const h = await start('cluster', { logKey, hub: { beatMs: 0.001 } });
    await h.all('get', { key: 'k', value: 'old' });
    const pid = h.child.pid!;
    // The hub's reader connection (the workers only publish; no other reader exists yet).
    const readers = String(await raw.client('LIST')).split('\n').filter((l) => l.includes(`name=cachebus:${ns}:reader`));
    expect(readers).toHaveLength(1);
    const readerId = /\bid=(\d+)/.exec(readers[0]!)![1]!;

    // Freeze the hub while its XREAD BLOCK is in flight (retry until we caught it there).
    for (let attempt = 0; ; attempt++) {
      process.kill(pid, 'SIGSTOP');
      await until(() => procState(pid) === 'T', 2000, 'the hub process to stop');
      if ((await clientFlags(readerId)).includes('b')) break;
      process.kill(pid, 'SIGCONT');
      if (attempt > 200) throw new Error('never caught the hub inside XREAD BLOCK');
      await new Promise((r) => setTimeout(r, 7)); // retry pause, not a synchronisation
    }
    const frozenAt = Date.now();
    // Redis answers the read (nil: the stream was idle) into the socket of the frozen hub...
    await until(async () => !(await clientFlags(readerId)).includes('b'), 5000, 'the frozen XREAD to time out');
    // ...and only then is k invalidated: that reply proves nothing about this entry.
    await (await external()).invalidate('k');
    const published = Date.now(); // the entry is in the stream by now
    // Every worker stops serving within maxStaleMs of the hub's last proof.
    await until(async () => new Set((await readLog(logKey)).filter((e) => !e.servable).map((e) => e.origin)).size === 3,
      10_000, 'every worker to stop serving');
    // The scenario itself: the hub stays frozen until the invalidation is older than maxStaleMs,
    // so serving k at any moment after the resume would break the bound.
    await until(() => Date.now() > published + MAX_STALE + 20, 10_000, 'the invalidation to be older than maxStaleMs');
    const received = h.waitAll('received', () => true, 10_000);
    process.kill(pid, 'SIGCONT');
    await received;
    await until(async () => new Set((await readLog(logKey)).filter((e) => e.servable && e.at > frozenAt).map((e) => e.origin)).size === 3,
      10_000, 'every worker to serve again');
    const log = await readLog(logKey);
    // Whenever a worker (re)started serving after the freeze, k was already gone.
    expect(log.filter((e) => e.at > frozenAt).map((e) => e.peekK)).toEqual(Array(log.filter((e) => e.at > frozenAt).length).fill(null));
    expect(await h.all('peek', { key: 'k' })).toEqual([null, null, null]);
  });
});

describe('#7 a closed hub stops its caches at once', () => {
  it.each(['cluster', 'threads'] as const)('%s: the closed status reaches a cache that already refuses (sync get/peek right then)', async (mode) => {
    const h = await start(mode);
    await h.all('get', { key: 'k', value: 1 });
    expect(await h.all('peek', { key: 'k' })).toEqual([1, 1, 1]);
    const closed = h.waitAll<{ status: string; peekK: unknown; getK: unknown }>('status', (s) => s.status === 'closed');
    await h.call('host', 'hubClose');
    expect((await closed).map((s) => [s.getK, s.peekK])).toEqual([[null, null], [null, null], [null, null]]);
  });

  it('in this process: the very next synchronous peek after the message refuses; the client itself reports not current', async () => {
    const hb = hub();
    const c = await cache();
    await c.get('k', () => 1);
    expect(c.peek('k')).toBe(1);
    const seen = waitForEvent<{ status: string }>(c, 'status', (s) => s.status === 'closed');
    let atClose: unknown = 'not run';
    c.on('status', (s) => { if (s.status === 'closed') atClose = c.peek('k'); });
    await hb.close();
    await seen;
    expect(atClose).toBeUndefined();
    expect(c.peek('k')).toBeUndefined();
    expect(c.servable).toBe(false);

    // The relay client's own view: no proof held by the time the closed status is handed over.
    const hb2 = hub();
    const calls: string[] = [];
    let client: RelayClient | undefined;
    const h: ReaderHandlers = {
      onEntry: () => undefined, onGap: () => undefined, onBadEntry: () => undefined, onError: () => undefined,
      onCaughtUp: () => calls.push('proof'),
      onStatus: (s) => calls.push(`${s}:${client?.current}`),
    };
    client = await RelayClient.open('broadcast', { prefix, namespace: ns, origin: () => undefined, maxStaleMs: MAX_STALE, connectTimeoutMs: 3000, auto: false }, h);
    try {
      expect(client!.current).toBe(true);
      await hb2.close();
      await until(() => calls.includes('closed:false'), 3000, 'the closed status');
      expect(client!.current).toBe(false);
    } finally {
      client?.close();
    }
  });
});

describe("#9 each cache's own secret", () => {
  it('a hub without a secret refuses a cache with one, naming options.secret', async () => {
    hub();
    await expect(cache({ secret: 's3cret' })).rejects.toMatchObject({ code: 'E_RELAY_REFUSED', message: expect.stringMatching(/options\.secret/) });
  });

  it('a hub with a secret refuses a cache without one, or with another', async () => {
    hub({ secret: 's3cret' });
    await expect(cache()).rejects.toMatchObject({ code: 'E_RELAY_REFUSED', message: expect.stringMatching(/options\.secret/) });
    await expect(cache({ secret: 'other' })).rejects.toMatchObject({ code: 'E_RELAY_REFUSED', message: expect.stringMatching(/options\.secret/) });
  });

  it('the same secret relays signed entries; a cache with a secret refuses beats of a hub without it', async () => {
    const hb = hub({ secret: 's3cret' });
    const c = await cache({ secret: 's3cret' });
    const pub = await createCache<{}>({ redis: REDIS_URL, namespace: ns, prefix, maxEntries: 10, relay: false, secret: 's3cret' });
    caches.push(pub);
    await c.get('k', () => 1);
    const got = waitForEvent(c, 'received');
    await pub.invalidate('k');
    await got;
    expect(c.peek('k')).toBeUndefined();
    expect(hb.stats.refused).toBe(0);

    // The hub closes (the cache holds); another hub, with no secret, takes over the channel:
    // its beats prove nothing, so the cache keeps holding.
    await until(() => c.servable, 5000, 'servable');
    await c.get('k', () => 2);
    const closed = waitForEvent<{ status: string }>(c, 'status', (s) => s.status === 'closed');
    await hb.close();
    await closed;
    const errors: { code?: string; message: string }[] = [];
    c.on('error', (e) => errors.push(e as { code?: string; message: string }));
    const ch = new BroadcastChannel(topicChannel(topicOf(prefix, ns)));
    const beat = (seq: number): void => ch.postMessage({ t: 'cachebus-relay', topic: topicOf(prefix, ns), hub: 'unsigned-hub', seq, type: 'beat', at: Number(process.hrtime.bigint()) / 1e6 });
    try {
      beat(1);
      await until(() => errors.length > 0, 3000, 'the mismatch to be reported');
      // A second beat, then a marker message: once the marker arrived, so did the beat (in order).
      const marker = waitForEvent(c, 'badEntry', () => true, 3000);
      beat(2);
      ch.postMessage({ t: 'cachebus-relay', topic: topicOf(prefix, ns), hub: 'unsigned-hub', seq: 3, type: 'bad', reason: 'malformed', id: '0-1', message: 'marker' });
      await marker;
    } finally {
      ch.close();
    }
    expect(errors).toHaveLength(1); // once per hub
    expect(errors[0]).toMatchObject({ code: 'E_RELAY_REFUSED', message: expect.stringMatching(/options\.secret/) });
    expect(c.servable).toBe(false);
    expect(c.peek('k')).toBeUndefined();
    expect(c.get('k', () => 3)).toBeInstanceOf(Promise); // a miss
  });

  it('node:cluster: a hub with a secret refuses workers without one', async () => {
    await expect(start('cluster', { hub: { secret: 's3cret' } })).rejects.toMatchObject({ code: 'E_RELAY_REFUSED' });
  });
});

describe("#10 an open 'auto' cache stays subscribed", () => {
  it('workers drop below minWorkers, the rest say hello again (hub partitioned): they keep their subscription', async () => {
    proxy = await ChaosProxy.start(Number(new URL(REDIS_URL).port || 6379));
    const h = await start('cluster', { hub: { redis: proxy.url, minWorkers: 3 } });
    expect((await h.all<Stats>('stats')).map((s) => s.relayMode)).toEqual(['ipc', 'ipc', 'ipc']);
    await h.call('host', 'killWorker', { index: 2 });
    await until(async () => (await h.call<{ clusterWorkers: number }>('host', 'hubStats')).clusterWorkers === 2, 5000, 'two workers left');
    const live = [0, 1];
    const hellos = (await h.call<{ hellos: number }>('host', 'hubStats')).hellos;
    // No beats while the hub cannot read: the caches stop serving and say hello again.
    const off = Promise.all(live.map((i) => h.wait<{ servable: boolean }>(i, 'servable', (e) => !e.servable, 10_000)));
    proxy.hold();
    await off;
    await until(async () => (await h.call<{ hellos: number }>('host', 'hubStats')).hellos >= hellos + 2, 5000, 're-hellos');
    const on = Promise.all(live.map((i) => h.wait<{ servable: boolean }>(i, 'servable', (e) => e.servable, 10_000)));
    proxy.release();
    await on;
    await Promise.all(live.map((i) => h.call(i, 'get', { key: 'k', value: 1 })));
    const got = Promise.all(live.map((i) => h.wait(i, 'received')));
    await (await external()).invalidate('k');
    await got;
    expect(await Promise.all(live.map((i) => h.call(i, 'peek', { key: 'k' })))).toEqual([null, null]);
    expect((await h.call<{ advisedDirect: number }>('host', 'hubStats')).advisedDirect).toBe(0);
  });
});
