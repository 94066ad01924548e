/**
 * Option `wake: 'host-first'` (issue 15, bus/host-wake.ts): as 'host', and each publish writes
 * its stream entry only once the same-host peers acknowledged their datagrams (or after
 * kAckWaitMs). Against the real Redis.
 */
import type { Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { busKeys, peerRegistry, wakeChannel } from '../bus/keys.js';
import { decodeHint, encodeAck, encodeHint, HostWake, kAckWaitMs } from '../bus/host-wake.js';
import { Publisher } from '../bus/publisher.js';
import type { DecodedEntry } from '../bus/wire.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { listener, redisNowMs, send } from './helpers/udp.js';
import { until, waitForEvent } from './helpers/wait.js';

let prefix: string;
let namespace: string;
let raw: Redis;
const caches: Cache<number>[] = [];
const wakes: HostWake[] = [];
const sockets: Socket[] = [];

const keys = (): ReturnType<typeof busKeys> => busKeys(prefix, namespace);
const tag = (): string => wakeChannel(keys());

/** A HostWake of the test (the bus's own class), started; `hints` gets what it was handed. */
async function hostWake(opts: { receive: boolean; awaitPeers?: boolean; ackWaitMs?: number }): Promise<{ wake: HostWake; hints: DecodedEntry[]; errors: unknown[] }> {
  const hints: DecodedEntry[] = [];
  const errors: unknown[] = [];
  const wake = new HostWake(
    raw,
    { registry: peerRegistry(keys()), tag: tag(), origin: `${hostname()}:${process.pid}:${wakes.length}:test`, secret: undefined, ...opts },
    { onHint: (e) => hints.push(e), onError: (e) => errors.push(e) },
  );
  wakes.push(wake);
  await wake.start();
  return { wake, hints, errors };
}

/** Tracks whether a promise has settled, without waiting for it. */
function settled(p: Promise<unknown>): () => boolean {
  let done = false;
  void p.finally(() => { done = true; });
  return () => done;
}

beforeEach(() => {
  prefix = randomPrefix();
  namespace = `hostfirst${randomBytes(4).toString('hex')}`;
  raw = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
});

afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  await Promise.all(wakes.splice(0).map((w) => w.close()));
  for (const s of sockets.splice(0)) s.close();
  raw.disconnect();
  await cleanupPrefix(prefix);
});

describe("wake: 'host-first'", () => {
  it('send() resolves only once every peer acknowledged: a cache acknowledges by itself, a silent peer holds it until it does', async () => {
    const peer = await listener(sockets); // a peer that acknowledges only when the test says so
    await raw.zadd(peerRegistry(keys()), await redisNowMs(raw), `${peer.port}|${hostname()}:999:0:silent`);
    const receiver = await hostWake({ receive: true });
    const sender = await hostWake({ receive: false, awaitPeers: true, ackWaitMs: 60_000 });
    expect(sender.wake.stats.peers).toBe(2);
    const acked = sender.wake.send({ keys: ['k'], tags: [], clear: false })!;
    expect(acked).toBeInstanceOf(Promise);
    const isDone = settled(acked);
    await until(() => receiver.hints.length === 1 && sender.wake.stats.acks === 1, 5000, 'the receiving cache handed the hint over and acknowledged it');
    expect(receiver.hints[0]!.keys).toEqual(['k']);
    await until(() => peer.got.length === 1, 5000, 'the silent peer got its datagram');
    const m = JSON.parse(peer.got[0]!) as unknown[];
    expect(m).toHaveLength(7); // ["h1", tag, origin, keys, tags, clear, seq]
    expect(decodeHint(Buffer.from(peer.got[0]!), tag(), undefined).keys).toEqual(['k']);
    // One peer of two: still waiting (a round trip to Redis gives a wrongly resolved promise time to show).
    await raw.ping();
    expect(isDone()).toBe(false);
    peer.socket.send(encodeAck(m[6] as number), peer.from[0]!.port, '127.0.0.1');
    await acked;
    expect(sender.wake.stats).toMatchObject({ acks: 2, unacked: 0, sent: 2 });
    expect([...receiver.errors, ...sender.errors]).toEqual([]);
  });

  it('a peer that never acknowledges costs ackWaitMs, counted as unacked; close() lets every wait go', async () => {
    const peer = await listener(sockets);
    await raw.zadd(peerRegistry(keys()), await redisNowMs(raw), `${peer.port}|${hostname()}:999:0:silent`);
    const quick = await hostWake({ receive: false, awaitPeers: true, ackWaitMs: 20 });
    await quick.wake.send({ keys: ['a'], tags: [], clear: false });
    expect(quick.wake.stats).toMatchObject({ acks: 0, unacked: 1 });
    const slow = await hostWake({ receive: false, awaitPeers: true, ackWaitMs: 600_000 });
    const pending = slow.wake.send({ keys: ['b'], tags: [], clear: false })!;
    await slow.wake.close();
    await pending; // resolved by close(), not after ten minutes
    // Without awaitPeers nothing is asked: a plain 'host' datagram, no promise.
    const plain = await hostWake({ receive: false });
    expect(plain.wake.send({ keys: ['c'], tags: [], clear: false })).toBeUndefined();
    await until(() => peer.got.length === 3, 5000, 'three datagrams');
    expect((JSON.parse(peer.got[2]!) as unknown[]).length).toBe(6);
    expect(kAckWaitMs).toBeLessThanOrEqual(5); // the default bound the docs promise
  });

  it('a receiver acknowledges a valid hint that asks, to its sender, once the keys dropped; not an invalid one', async () => {
    const c = await createCache<number>({ redis: REDIS_URL, namespace, prefix, maxEntries: 100, relay: false, wake: 'host' });
    c.on('error', () => undefined);
    caches.push(c);
    const member = (await raw.zrange(peerRegistry(keys()), 0, -1)).find((x) => x.endsWith(`|${c.bus!.origin}`))!;
    const port = Number(member.split('|')[0]);
    await c.get('k', () => 1);
    const sender = await listener(sockets);
    const hint = (seq: unknown): Buffer => {
      const body = JSON.parse(encodeHint({ keys: ['k'], tags: [], clear: false }, tag(), `${hostname()}:1:0:test`, undefined).toString()) as unknown[];
      return Buffer.from(JSON.stringify([...body, seq]));
    };
    const dropped = waitForEvent<{ key: string }>(c, 'drop', (d) => d.key === 'k', 5000);
    sender.socket.send(hint(41), port, '127.0.0.1');
    await dropped;
    await until(() => sender.got.length === 1, 5000, 'the acknowledgement');
    expect(sender.got[0]).toBe('A41');
    expect(c.has('k')).toBe(false);
    for (const bad of [-1, 1.5, '7', null]) sender.socket.send(hint(bad), port, '127.0.0.1');
    await until(() => c.bus?.hostWakeStats?.ignored === 4, 5000, 'four malformed sequence numbers ignored');
    await send(port, encodeAck(3)); // an acknowledgement nobody waits for: counted, nothing else
    await until(() => c.bus?.hostWakeStats?.acks === 1, 5000, 'the stray acknowledgement counted');
    expect(sender.got).toEqual(['A41']);
    expect(c.bus?.hostWakeStats?.hints).toBe(1);
  });

  it('the publisher writes the stream entry only once the hint settles', async () => {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => { open = resolve; });
    const stream = keys().stream;
    const pub = new Publisher(raw, { stream, origin: 'test', maxEntryBytes: 65_536, streamMaxLen: 0, hint: () => gate });
    const published = pub.publish({ keys: ['k'] });
    await new Promise((resolve) => setImmediate(resolve)); // the batch's flush (a microtask) has run
    expect(await raw.xlen(stream)).toBe(0); // same connection: a script sent before would be counted here
    open();
    const ids = await published;
    expect(ids).toHaveLength(1);
    expect(await raw.xlen(stream)).toBe(1);
  });

  it("end to end: a 'host-first' writer and a 'host' reader; the keys drop, the entry is applied, the writer counts the acknowledgement", async () => {
    const reader = await createCache<number>({ redis: REDIS_URL, namespace, prefix, maxEntries: 100, relay: false, wake: 'host' });
    const writer = await createCache<number>({ redis: REDIS_URL, namespace, prefix, maxEntries: 100, relay: false, wake: 'host-first' });
    caches.push(reader, writer);
    expect(writer.bus?.hostWakeStats?.peers).toBe(1);
    await reader.get('k', () => 1);
    const received: string[] = [];
    reader.on('received', (r) => received.push(r.id));
    const dropped = waitForEvent<{ key: string }>(reader, 'drop', (d) => d.key === 'k', 5000);
    const [id] = await new Promise<string[]>((resolve) => { writer.once('published', (p) => resolve(p.ids)); void writer.invalidate('k'); });
    await dropped;
    await until(() => writer.bus?.hostWakeStats?.acks === 1, 5000, 'the reader acknowledged');
    await until(() => received.includes(id!), 10_000, 'the stream entry was applied');
    expect(reader.bus?.cursor).toBe(id);
  });

  it("createCache takes wake: 'host-first' and names it in the error for an unknown mode", async () => {
    await expect(createCache<number>({ redis: REDIS_URL, namespace, prefix, maxEntries: 100, relay: false, wake: 'nope' as never }))
      .rejects.toThrow(/'stream', 'pubsub', 'host' or 'host-first'/);
  });
});
