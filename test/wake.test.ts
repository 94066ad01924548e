/**
 * Option `wake: 'pubsub'` (issue 15, bus/wake.ts): a PUBLISH beside each stream entry lets
 * readers drop keys early; the stream stays the source of truth. Against the real Redis.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { busKeys, wakeChannel } from '../bus/keys.js';
import { encode } from '../bus/wire.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until } from './helpers/wait.js';

let prefix: string;
let namespace: string;
let raw: Redis;
const caches: Cache<number>[] = [];

async function cache(extra: Record<string, unknown> = {}): Promise<Cache<number>> {
  const c = await createCache<number>({ redis: REDIS_URL, namespace, prefix, maxEntries: 1000, relay: false, ...extra });
  c.on('error', () => undefined);
  caches.push(c);
  return c;
}

/** A hint as a publisher in 'pubsub' mode sends it, for an entry that is NOT in the stream. */
function hint(keys: string[], origin = 'someone-else', secret?: string): string {
  const [fields] = encode({ keys, tags: [], clear: false }, { origin, time: Date.now(), secret, maxEntryBytes: 65_536 });
  return JSON.stringify([`${Date.now()}-0`, fields]);
}

const channel = (): string => wakeChannel(busKeys(prefix, namespace));

beforeEach(() => {
  prefix = randomPrefix();
  namespace = `wake${randomBytes(4).toString('hex')}`;
  raw = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
});

afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  raw.disconnect();
  await cleanupPrefix(prefix);
});

describe("wake: 'pubsub'", () => {
  it('drops a hinted key at once, and still reads, chain-checks and applies the stream entry', async () => {
    const reader = await cache({ wake: 'pubsub' });
    const writer = await cache({ wake: 'pubsub' });
    await reader.get('a', () => 1);
    // A hint alone (no stream entry) is applied: the drop does not wait for the stream.
    await raw.publish(channel(), hint(['a']));
    await until(() => !reader.has('a'), 5000, 'the hint dropped a');
    expect(reader.bus?.wakeStats?.hints).toBe(1);
    // A real invalidation: the hint and the stream entry both arrive; the entry is still applied.
    await reader.get('b', () => 1);
    const received: string[] = [];
    reader.on('received', (r) => received.push(r.id));
    const [id] = await new Promise<string[]>((resolve) => { writer.once('published', (p) => resolve(p.ids)); void writer.invalidate('b'); });
    await until(() => received.includes(id!), 5000, 'the stream entry was applied');
    expect(reader.has('b')).toBe(false);
    expect(reader.bus?.cursor).toBe(id);
    // Its hint came too (in either order: the two connections are read as their data arrives).
    await until(() => reader.bus?.wakeStats?.hints === 2, 5000, 'the hint of b');
  });

  it('a lost hint (wake connection killed, or a publisher without hints) is delivered by the stream', async () => {
    const reader = await cache({ wake: 'pubsub' });
    const hinting = await cache({ wake: 'pubsub' });
    const plain = await cache(); // 'stream': publishes no hints
    await reader.get('a', () => 1);
    await plain.invalidate('a');
    await until(() => !reader.has('a'), 5000, 'a dropped through the stream');
    expect(reader.bus?.wakeStats?.hints).toBe(0);
    // Kill the reader's subscriber connection, then publish at once: the hint may be lost.
    const list = await raw.client('LIST') as string;
    const line = list.split('\n').find((l) => l.includes(`name=cachebus:${namespace}:wake `) && l.includes('sub=1'));
    expect(line).toBeDefined();
    await reader.get('b', () => 1);
    await raw.client('KILL', 'ID', /id=(\d+)/.exec(line!)![1]!);
    await hinting.invalidate('b');
    await until(() => !reader.has('b'), 5000, 'b dropped (through the stream if the hint was lost)');
    // And the subscription comes back: a later hint alone is applied again.
    await reader.get('c', () => 1);
    await until(async () => { await raw.publish(channel(), hint(['c'])); return !reader.has('c'); }, 5000, 'hints after the reconnect');
  });

  it('with hints, the stream is read in batches under traffic: every entry applied, in far fewer reads than entries', async () => {
    const reader = await cache({ wake: 'pubsub' });
    const writer = await cache({ wake: 'pubsub' });
    const plainReader = await cache(); // 'stream': reads again at once after each entry
    const n = 100;
    for (let i = 0; i < n; i++) { await reader.get(`k${i}`, () => 1); await plainReader.get(`k${i}`, () => 1); }
    const before = { hinted: reader.bus!.reads!.total, plain: plainReader.bus!.reads!.total };
    const dropped = (c: Cache<number>, key: string): Promise<void> =>
      new Promise((resolve) => { const on = (d: { key: string }): void => { if (d.key === key) { c.off('drop', on); resolve(); } }; c.on('drop', on); });
    let last = '';
    for (let i = 0; i < n; i++) {
      // One at a time, as the propagation benchmark does: the next once the key has dropped in both readers.
      const both = Promise.all([dropped(reader, `k${i}`), dropped(plainReader, `k${i}`)]);
      [last] = await writer.bus!.publish({ keys: [`k${i}`] }) as [string];
      await both;
    }
    await until(() => reader.bus!.cursor === last, 5000, 'every entry read and applied');
    expect(reader.stats.entriesReceived).toBeGreaterThanOrEqual(n);
    const reads = { hinted: reader.bus!.reads!.total - before.hinted, plain: plainReader.bus!.reads!.total - before.plain };
    expect(reads.plain).toBeGreaterThanOrEqual(n); // one read per entry without hints
    expect(reads.hinted).toBeLessThan(n / 2);
    expect(reader.bus!.reads!.paused).toBeGreaterThan(0);
  });

  it('entries that come with no hint (a publisher in stream mode) are read as they arrive, not after a pause', async () => {
    const reader = await cache({ wake: 'pubsub' });
    const writer = await cache(); // 'stream': publishes no hints
    const n = 50;
    for (let i = 0; i < n; i++) await reader.get(`k${i}`, () => 1);
    const before = reader.bus!.reads!;
    for (let i = 0; i < n; i++) {
      const dropped = new Promise<void>((resolve) => { const on = (d: { key: string }): void => { if (d.key === `k${i}`) { reader.off('drop', on); resolve(); } }; reader.on('drop', on); });
      await writer.invalidate(`k${i}`);
      await dropped;
    }
    expect(reader.bus?.wakeStats?.hints).toBe(0);
    // Read as they arrive, as in 'stream' mode: no read was followed by a pause.
    expect(reader.bus!.reads!.paused - before.paused).toBe(0);
    expect(reader.bus!.reads!.total - before.total).toBeGreaterThanOrEqual(n - 1); // the first entry may come with the read in flight
  });

  it('ignores malformed, foreign-version and (with a secret) unsigned hints, and keeps reading the stream', async () => {
    const secret = 'wake-test-secret';
    const reader = await cache({ wake: 'pubsub', secret });
    const writer = await cache({ wake: 'pubsub', secret });
    await reader.get('a', () => 1);
    await raw.publish(channel(), 'not json');
    await raw.publish(channel(), JSON.stringify(['1-0', ['v', '99', 'k', '["a"]']]));
    await raw.publish(channel(), hint(['a'])); // unsigned
    await raw.publish(channel(), hint(['a'], 'x', 'wrong secret'));
    await until(() => reader.bus?.wakeStats?.ignored === 4, 5000, 'four bad hints ignored');
    expect(reader.has('a')).toBe(true);
    expect(reader.bus?.wakeStats?.hints).toBe(0);
    await raw.publish(channel(), hint(['a'], 'x', secret)); // signed: applied
    await until(() => !reader.has('a'), 5000, 'a signed hint is applied');
    await reader.get('b', () => 1);
    await writer.invalidate('b');
    await until(() => !reader.has('b'), 5000, 'the stream (and its hint) still deliver');
  });

  it('rejects an unknown wake mode, naming the option', async () => {
    await expect(cache({ wake: 'carrier-pigeon' })).rejects.toThrow(/options\.wake/);
  });
});
