/**
 * Option `wake: 'host'` (issue 15, bus/host-wake.ts): a publisher sends each entry straight to
 * the caches of its namespace on the same host, one loopback UDP datagram each; the stream stays
 * the source of truth. Against the real Redis.
 */
import { createSocket, type Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { busKeys, hostPortKey, peerRegistry, wakeChannel } from '../bus/keys.js';
import { decodeHint, encodeHint } from '../bus/host-hint.js';
import { HostWake, kBroadcast } from '../bus/host-wake.js';
import { InvalidOptionError } from '../bus/errors.js';
import { sign } from '../bus/wire.js';
import { writeBehind } from '../worker-runtime/write-behind/write-behind.js';
import { createItems, ITEMS } from './fixtures/wb-db.js';
import { TestSchema } from './helpers/pg.js';
import { WorkerProc } from './helpers/procs.js';
import { ChaosProxy } from './helpers/proxy.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';

let prefix: string;
let namespace: string;
let raw: Redis;
let proxy: ChaosProxy | undefined;
const caches: Cache<number>[] = [];
const sockets: Socket[] = [];

async function cache(extra: Record<string, unknown> = {}): Promise<Cache<number>> {
  const c = await createCache<number>({ redis: REDIS_URL, namespace, prefix, maxEntries: 1000, relay: false, wake: 'host', ...extra });
  c.on('error', () => undefined);
  caches.push(c);
  return c;
}

const registry = (): string => peerRegistry(busKeys(prefix, namespace));

const portKey = (): string => hostPortKey(busKeys(prefix, namespace), hostname());

/** Where a cache listens, from the registry: `b<port>` the host's broadcast port, `<port>` its own on 127.0.0.1. */
async function addressOf(c: Cache<number>): Promise<{ port: number; address: string }> {
  const member = (await raw.zrange(registry(), 0, -1)).find((m) => m.endsWith(`|${c.bus!.origin}`));
  expect(member).toBeDefined();
  const head = member!.split('|')[0]!;
  return head.startsWith('b') ? { port: Number(head.slice(1)), address: kBroadcast } : { port: Number(head), address: '127.0.0.1' };
}

/** A UDP socket of the test on 127.0.0.1, with the datagrams it got. */
async function listener(): Promise<{ port: number; got: string[] }> {
  const s = createSocket('udp4');
  sockets.push(s);
  const got: string[] = [];
  s.on('message', (m) => got.push(m.toString()));
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  return { port: s.address().port, got };
}

function send(to: { port: number; address: string }, payload: string): Promise<void> {
  const s = createSocket('udp4');
  return new Promise((resolve) => s.bind(0, '127.0.0.1', () => {
    s.setBroadcast(true);
    s.send(payload, to.port, to.address, () => { s.close(); resolve(); });
  }));
}

const tag = (): string => wakeChannel(busKeys(prefix, namespace));

/** A datagram as a 'host' publisher sends it. */
function datagram(keys: string[], opts: { tag?: string; secret?: string; origin?: string } = {}): string {
  return encodeHint({ keys, tags: [], clear: false }, opts.tag ?? tag(), opts.origin ?? `${hostname()}:1:0:test`, opts.secret).toString();
}

/** The keys of a datagram a test socket got. */
const keysOf = (d: string): readonly string[] => decodeHint(Buffer.from(d), tag(), undefined).keys;

async function redisNowMs(): Promise<number> {
  const [s, us] = await raw.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

beforeEach(() => {
  prefix = randomPrefix();
  namespace = `host${randomBytes(4).toString('hex')}`;
  raw = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
});

afterEach(async () => {
  proxy?.release();
  await Promise.all(caches.splice(0).map((c) => c.close()));
  for (const s of sockets.splice(0)) s.close();
  await proxy?.close();
  proxy = undefined;
  raw.disconnect();
  await cleanupPrefix(prefix);
});

describe("wake: 'host'", () => {
  it('a same-host peer drops the key on the datagram while all its Redis connections are held; the stream entry is applied after', async () => {
    proxy = await ChaosProxy.start(Number(new URL(REDIS_URL).port || 6379));
    const reader = await cache({ redis: proxy.url });
    const writer = await cache(); // starts after the reader: its first registry read lists it
    expect(writer.bus?.hostWakeStats?.peers).toBe(1);
    await reader.get('k', () => 1);
    const received: string[] = [];
    reader.on('received', (r) => received.push(r.id));
    proxy.hold(); // the reader's stream reads (and everything else it says to Redis) go nowhere
    const dropped = waitForEvent<{ key: string; reason: string }>(reader, 'drop', (d) => d.key === 'k' && d.reason === 'invalidate', 5000);
    const [id] = await new Promise<string[]>((resolve) => { writer.once('published', (p) => resolve(p.ids)); void writer.invalidate('k'); });
    await dropped;
    expect(received).toEqual([]); // the stream had no part in it
    expect(reader.bus?.hostWakeStats?.hints).toBe(1);
    expect(writer.bus?.hostWakeStats?.sent).toBe(1);
    proxy.release();
    await until(() => received.includes(id!), 10_000, 'the stream entry was applied');
    expect(reader.bus?.cursor).toBe(id);
  });

  it('ignores malformed, unsigned (secret set) and other-namespace datagrams; a signed one drops the key', async () => {
    const reader = await cache({ secret: 's3cret' });
    const port = await addressOf(reader); // the host's broadcast port: any local process can send there
    expect(port.address).toBe(kBroadcast);
    await reader.get('a', () => 1);
    await send(port, 'not json at all');
    await send(port, JSON.stringify(['x', 'y']));
    await send(port, datagram(['a'])); // unsigned
    await send(port, datagram(['a'], { secret: 'wrong' }));
    await send(port, datagram(['a'], { secret: 's3cret', tag: `${wakeChannel(busKeys(prefix, 'other'))}` }));
    const signed = Buffer.from(datagram(['a'], { secret: 's3cret' }));
    await send(port, signed.toString().replace('"a"', '"b"')); // the body changed under its signature
    const v2 = signed.toString().slice(64).replace('"h1"', '"h2"');
    await send(port, sign('s3cret', v2) + v2); // another version of the format, signed
    await until(() => reader.bus?.hostWakeStats?.ignored === 7, 5000, 'seven datagrams ignored');
    expect(reader.has('a')).toBe(true);
    expect(reader.bus?.hostWakeStats?.hints).toBe(0);
    await send(port, datagram(['a'], { secret: 's3cret' }));
    await until(() => !reader.has('a'), 5000, 'the signed datagram dropped a');
    expect(reader.bus?.hostWakeStats?.hints).toBe(1);
  });

  it('sends to the live peers of this host only: not to itself, another host, a peer that stopped beating; a closed cache leaves the registry', async () => {
    const live = await listener();
    const otherHost = await listener();
    const stale = await listener();
    const dead = await listener();
    sockets.splice(sockets.length - 1, 1)[0]!.close(); // a peer killed without leaving: nothing listens there
    const now = await redisNowMs();
    await raw.zadd(registry(),
      now, `${live.port}|${hostname()}:999:0:live`,
      now, `${otherHost.port}|not-${hostname()}:1:0:other`,
      now - 60_000, `${stale.port}|${hostname()}:998:0:stale`,
      now, `${dead.port}|${hostname()}:997:0:dead`);
    const reader = await cache();
    const writer = await cache();
    expect(writer.bus?.hostWakeStats?.peers).toBe(3); // live, dead, reader
    expect(await raw.zscore(registry(), `${stale.port}|${hostname()}:998:0:stale`)).toBeNull(); // expired by the first beat
    await reader.get('k', () => 1);
    const errors: unknown[] = [];
    writer.on('error', (e) => errors.push(e));
    await writer.invalidate('k');
    await until(() => live.got.length === 1 && !reader.has('k'), 5000, 'the live peer and the reader got it');
    expect(keysOf(live.got[0]!)).toEqual(['k']);
    // Sent in the same synchronous loop as the live peer's: had they been sent, they would be here.
    await until(() => reader.bus?.hostWakeStats?.hints === 1, 5000, 'the reader counted it');
    expect(otherHost.got).toEqual([]);
    expect(stale.got).toEqual([]);
    expect(writer.bus?.hostWakeStats?.sent).toBe(3);
    expect(errors).toEqual([]);
    const origin = writer.bus!.origin;
    await writer.close();
    expect((await raw.zrange(registry(), 0, -1)).some((m) => m.endsWith(`|${origin}`))).toBe(false);
  });

  it('while datagrams flow the reader sends only its proving reads, and still applies every entry, in order', async () => {
    const reader = await cache();
    const writer = await cache();
    const received: string[] = [];
    reader.on('received', (r) => received.push(r.id));
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) {
      await reader.get(`k${i}`, () => 1);
      const dropped = waitForEvent<{ key: string }>(reader, 'drop', (d) => d.key === `k${i}`, 5000);
      const [id] = await new Promise<string[]>((resolve) => { writer.once('published', (p) => resolve(p.ids)); void writer.invalidate(`k${i}`); });
      ids.push(id!);
      await dropped;
    }
    await until(() => received.length === 60, 10_000, 'every stream entry applied');
    expect(received).toEqual(ids);
    const reads = reader.bus!.reads!;
    // A plain read may already wait in Redis when the first datagram arrives; after that, none.
    expect(reads.total - reads.proving).toBeLessThanOrEqual(2);
    expect(reader.bus?.hostWakeStats?.hints).toBe(60);
  });

  it("a write-behind write sends its hints once its script ran ('host' datagrams and 'pubsub' messages), so peers do not wait for a proving read", async () => {
    const schema = await TestSchema.create();
    try {
      await createItems(schema);
      for (const wake of ['host', 'pubsub'] as const) {
        namespace = `host${randomBytes(4).toString('hex')}`;
        proxy = await ChaosProxy.start(Number(new URL(REDIS_URL).port || 6379));
        const reader = await cache({ wake, redis: proxy.url });
        const writer = await cache({ wake, pg: schema.url });
        const items = await writeBehind(writer, ITEMS, { pg: schema.url });
        try {
          await reader.get('items:1', () => 1);
          proxy.hold(); // pub/sub messages wait in the proxy too: release it before expecting a 'pubsub' hint
          const dropped = waitForEvent<{ key: string }>(reader, 'drop', (d) => d.key === 'items:1', 5000);
          await items.write({ id: 1, val: 'a', n: 1 });
          if (wake === 'host') {
            await dropped; // with every Redis connection of the reader held: the datagram did it
            expect(reader.bus?.hostWakeStats?.hints).toBe(1);
            proxy.release();
          } else {
            proxy.release();
            await dropped;
            await until(() => reader.bus?.wakeStats?.hints === 1, 5000, 'the hint of the write');
          }
        } finally {
          await items.close();
          proxy.release();
          await Promise.all(caches.splice(0).map((c) => c.close()));
          await proxy.close();
          proxy = undefined;
        }
      }
    } finally {
      await schema.drop();
    }
  });

  it('while datagrams flow, entries from a publisher that sends none (another host, a stream-mode publisher) turn plain reads back on', async () => {
    const reader = await cache();
    const hinting = await cache();
    const plain = await cache({ wake: 'stream' });
    for (let i = 0; i < 5; i++) {
      await reader.get(`h${i}`, () => 1);
      await hinting.invalidate(`h${i}`);
      await until(() => !reader.has(`h${i}`), 5000, `h${i} dropped`);
    }
    const before = reader.bus!.reads!;
    for (let i = 0; i < 20; i++) {
      await reader.get(`p${i}`, () => 1);
      await hinting.invalidate(`h${i}`); // hints keep flowing
      await plain.invalidate(`p${i}`);
      await until(() => !reader.has(`p${i}`), 5000, `p${i} dropped through the stream`);
    }
    const after = reader.bus!.reads!;
    // Only proving reads (4 a second) would leave the unhinted entries waiting up to 250 ms each.
    expect((after.total - after.proving) - (before.total - before.proving)).toBeGreaterThanOrEqual(10);
  });

  it('a worker frozen (SIGSTOP) past maxStaleMs while datagrams flow serves no old value on resume (I3)', async () => {
    const w = await WorkerProc.start({ redis: REDIS_URL, namespace, prefix, maxEntries: 1000, maxStaleMs: 500, relay: false, wake: 'host' });
    try {
      const pub = await cache(); // starts after the worker: its first registry read lists it
      const plain = await cache({ wake: 'stream' }); // sends no datagram: only the stream carries its entries
      expect(pub.bus?.hostWakeStats?.peers).toBe(1);
      await w.call('get', { key: 'k', value: 'old' });
      // Datagrams flow: the worker's reader now only sends its proving reads.
      for (let i = 0; i < 3; i++) {
        await w.call('get', { key: `h${i}`, value: 'x' });
        await pub.invalidate(`h${i}`);
        await until(async () => (await w.call('peek', { key: `h${i}` })) === null, 5000, `h${i} dropped`);
      }
      const pid = w.child.pid!;
      process.kill(pid, 'SIGSTOP');
      const frozenUntil = Date.now() + 1500; // the fault's length, not a signal
      try {
        // No datagram: the entry waits in the frozen reader's stream, and only I3 keeps 'old' from being served.
        await plain.invalidate('k');
        while (Date.now() < frozenUntil) await new Promise((r) => setTimeout(r, frozenUntil - Date.now()));
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      // The very first request after SIGCONT, whatever the worker has processed by then.
      expect(await w.call('peek', { key: 'k' })).toBeNull();
    } finally {
      await w.stop();
    }
  });

  it('close() returns during a silent partition: leaving the registry is not waited for past a bound', async () => {
    proxy = await ChaosProxy.start(Number(new URL(REDIS_URL).port || 6379));
    const c = await cache({ redis: proxy.url });
    await c.get('k', () => 1);
    proxy.hold();
    const started = Date.now();
    await c.close();
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('after a quiet spell the first invalidation leaves within the call; under traffic one datagram per tick carries all its keys', async () => {
    const peer = await listener();
    await raw.zadd(registry(), await redisNowMs(), `${peer.port}|${hostname()}:999:0:peer`);
    const writer = await cache();
    expect(writer.bus?.hostWakeStats?.peers).toBe(1);
    const stats = writer.bus!.hostWakeStats!;
    // Quiet (it never sent): sent before invalidate() returns (no microtask has run), ahead of the publish script.
    const p = writer.invalidate('q1');
    expect(stats.sent).toBe(1);
    // More in the same tick: one more datagram, with the whole batch, as the batch is sent.
    const more = [writer.invalidate('q2'), writer.invalidate('q3')];
    expect(stats.sent).toBe(1);
    await Promise.all([p, ...more]);
    expect(stats.sent).toBe(2);
    await until(() => peer.got.length === 2, 5000, 'both datagrams arrived');
    expect(keysOf(peer.got[0]!)).toEqual(['q1']);
    expect([...keysOf(peer.got[1]!)].sort()).toEqual(['q1', 'q2', 'q3']);
    // Traffic: ticks back to back, five invalidations each. A tick hints once (twice only when it
    // comes after a quiet spell, which a slow machine may make of a few).
    const ticks = 50;
    const before = stats.sent;
    const keys = new Set<string>();
    for (let t = 0; t < ticks; t++) {
      const batch = Array.from({ length: 5 }, (_, i) => `t${t}-${i}`);
      batch.forEach((k) => keys.add(k));
      await Promise.all(batch.map((k) => writer.invalidate(k)));
    }
    const sent = stats.sent - before;
    expect(sent).toBeGreaterThanOrEqual(ticks);
    expect(sent).toBeLessThanOrEqual(ticks * 1.5); // always hinting the first call at once: 2 per tick
    await until(() => peer.got.length === 2 + sent, 5000, 'every datagram arrived');
    const got = new Set(peer.got.slice(2).flatMap((d) => [...keysOf(d)]));
    expect(got).toEqual(keys);
  });

  it('entries that come with no datagram (a stream-mode publisher) are read as they arrive while no datagram flows', async () => {
    const reader = await cache();
    const plain = await cache({ wake: 'stream' });
    for (let i = 0; i < 20; i++) {
      await reader.get(`k${i}`, () => 1);
      await plain.invalidate(`k${i}`);
      await until(() => !reader.has(`k${i}`), 5000, `k${i} dropped through the stream`);
    }
    expect(reader.bus?.hostWakeStats?.hints).toBe(0);
    const reads = reader.bus!.reads!;
    expect(reads.total - reads.proving).toBeGreaterThanOrEqual(10); // plain reads, one per entry or so
  });
  it('caches started together agree on one broadcast port: one datagram per publish reaches every same-host peer, and a joining probe is no hint', async () => {
    const group = await Promise.all([cache(), cache(), cache(), cache()]); // as node:cluster forks them
    const [writer, ...readers] = group as [Cache<number>, ...Cache<number>[]];
    const addresses = await Promise.all(group.map(addressOf));
    expect(new Set(addresses.map((a) => `${a.address}:${a.port}`)).size).toBe(1);
    expect(addresses[0]!.address).toBe(kBroadcast);
    expect(await raw.get(portKey())).toBe(String(addresses[0]!.port));
    for (const c of group) expect(c.bus?.hostWakeStats?.listen).toBe('broadcast');
    await until(() => writer.bus?.hostWakeStats?.peers === 3, 5000, 'the writer lists the three others (one beat)');
    const late = await cache(); // its probe goes through the shared port: the others must not take it for a hint
    expect(late.bus?.hostWakeStats?.listen).toBe('broadcast');
    expect((await addressOf(late)).port).toBe(addresses[0]!.port);
    for (const r of [...readers, late]) await r.get('k', () => 1);
    const sent = writer.bus!.hostWakeStats!.sent;
    await writer.invalidate('k');
    expect(writer.bus!.hostWakeStats!.sent - sent).toBe(1);
    // `late` may not be on the writer's list yet (it beats every second), but it listens on the port.
    await until(() => [...readers, late].every((r) => !r.has('k')), 5000, 'every peer dropped k');
    for (const r of readers) {
      expect(r.bus?.hostWakeStats?.hints).toBe(1);
      expect(r.bus?.hostWakeStats?.ignored).toBe(0);
    }
    expect(writer.bus?.hostWakeStats?.hints).toBe(0); // its own datagram came back to it, and was skipped
  });

  it('a cache whose probe does not come back, or with hostFanout: unicast, listens on its own port; publishers send to it one datagram each beside the broadcast', async () => {
    HostWake.probeAddress = '127.0.0.1'; // the probe goes where nothing listens on the port: this host "does not deliver broadcasts"
    let noBroadcast: Cache<number>;
    try {
      noBroadcast = await cache();
    } finally {
      HostWake.probeAddress = kBroadcast;
    }
    const optedOut = await cache({ hostFanout: 'unicast' });
    const shared = await cache();
    const writer = await cache();
    expect(noBroadcast.bus?.hostWakeStats?.listen).toBe('unicast');
    expect(optedOut.bus?.hostWakeStats?.listen).toBe('unicast');
    expect((await addressOf(noBroadcast)).address).toBe('127.0.0.1');
    expect((await addressOf(optedOut)).address).toBe('127.0.0.1');
    expect((await addressOf(shared)).address).toBe(kBroadcast);
    expect(writer.bus?.hostWakeStats?.peers).toBe(3);
    for (const r of [noBroadcast, optedOut, shared]) await r.get('k', () => 1);
    const sent = writer.bus!.hostWakeStats!.sent;
    await writer.invalidate('k');
    expect(writer.bus!.hostWakeStats!.sent - sent).toBe(3); // the broadcast port, and the two own ports
    await until(() => [noBroadcast, optedOut, shared].every((r) => r.bus?.hostWakeStats?.hints === 1 && !r.has('k')), 5000, 'all three dropped k on its datagram');
    // A unicast listener sends to the broadcast port too (once a beat listed the caches that started after it).
    await until(() => optedOut.bus?.hostWakeStats?.peers === 3, 5000, 'the opted-out cache lists the three others');
    await shared.get('j', () => 1);
    await optedOut.invalidate('j');
    await until(() => shared.bus?.hostWakeStats?.hints === 2 && !shared.has('j'), 5000, 'the shared port got the unicast listener\'s datagram');
  });

  it('an agreed port another program holds (no SO_REUSEADDR) is not fatal: each cache keeps the port it bound, and publishers send to every distinct one', async () => {
    const squatter = createSocket('udp4'); // binds the broadcast address without SO_REUSEADDR: nobody can join it
    sockets.push(squatter);
    const squatted: string[] = [];
    squatter.on('message', (m) => squatted.push(m.toString()));
    await new Promise<void>((resolve) => squatter.bind(0, kBroadcast, resolve));
    await raw.set(portKey(), String(squatter.address().port), 'PX', 60_000);
    const a = await cache();
    const b = await cache();
    const writer = await cache();
    const [pa, pb] = [await addressOf(a), await addressOf(b)];
    expect(pa.address).toBe(kBroadcast);
    expect(pb.address).toBe(kBroadcast);
    expect(new Set([pa.port, pb.port, squatter.address().port]).size).toBe(3);
    await a.get('k', () => 1);
    await b.get('k', () => 1);
    const sent = writer.bus!.hostWakeStats!.sent;
    await writer.invalidate('k');
    expect(writer.bus!.hostWakeStats!.sent - sent).toBe(2);
    await until(() => !a.has('k') && !b.has('k'), 5000, 'both dropped k');
    expect(squatted.filter((m) => !m.startsWith('?'))).toEqual([]); // probes only: no hint went to the squatted port
  });

  it('rejects an unknown hostFanout with a typed error', async () => {
    await expect(cache({ hostFanout: 'multicast' })).rejects.toThrow(InvalidOptionError);
    await expect(cache({ hostFanout: 'multicast' })).rejects.toThrow(/options.hostFanout must be 'broadcast' or 'unicast'/);
  });

  it('the host port is claimed again after Redis lost it (a restart, an eviction): the next beat sets it to the port its caches listen on', async () => {
    const a = await cache();
    const { port } = await addressOf(a);
    expect(await raw.get(portKey())).toBe(String(port));
    await raw.del(portKey());
    await until(async () => (await raw.get(portKey())) === String(port), 5000, 'the beat claimed the port again');
    const b = await cache();
    expect((await addressOf(b)).port).toBe(port);
  });
});
