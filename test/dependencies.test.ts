import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { busKeys } from '../bus/keys.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { waitForEvent } from './helpers/wait.js';

let prefix: string;
const caches: Cache<{}>[] = [];

async function make(extra: Record<string, unknown> = {}): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 20_000, ...extra });
  caches.push(c);
  return c;
}

const streamLength = async (): Promise<number> => {
  const r = new Redis(REDIS_URL);
  try {
    return await r.xlen(busKeys(prefix, 'shop').stream);
  } finally {
    r.disconnect();
  }
};

beforeEach(() => { prefix = randomPrefix(); });
afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  await cleanupPrefix(prefix);
});

describe('per-entry dependencies (dependsOn)', () => {
  it('invalidating a source drops its dependents transitively, here and in another worker', async () => {
    const a = await make();
    const b = await make();
    for (const c of [a, b]) {
      await c.get('order_line:17:price', () => 10);
      await c.get('order_line:18:price', () => 5);
      await c.get('order:9:total', () => 15, { dependsOn: ['order_line:17:price', 'order_line:18:price'] });
      await c.get('invoice:3:amount', () => 15, { dependsOn: ['order:9:total'] });
      await c.get('order:10:total', () => 7, { dependsOn: ['order_line:99:price'] });
    }
    const received = waitForEvent<{ keys: number; dropped: number }>(b, 'received');
    const published = waitForEvent<{ keys: number; ids: string[] }>(a, 'published');
    await a.invalidate('order_line:17:price');
    // The stream carries only the changed key: each reader expands it with its own graph.
    expect(await published).toMatchObject({ keys: 1, ids: [expect.any(String)] });
    expect(await received).toMatchObject({ keys: 1, dropped: 3 });
    for (const c of [a, b]) {
      expect(c.peek('order_line:17:price')).toBeUndefined();
      expect(c.peek('order:9:total')).toBeUndefined();
      expect(c.peek('invoice:3:amount')).toBeUndefined();
      expect(c.peek('order_line:18:price')).toBe(5);
      expect(c.peek('order:10:total')).toBe(7);
    }
  });

  it('a dependent can be dropped on its own: its sources stay, and its edges are forgotten', async () => {
    const a = await make({ redis: false });
    await a.get('s', () => 1);
    await a.get('d', () => 2, { dependsOn: ['s'] });
    await a.invalidate('d');
    expect(a.peek('s')).toBe(1);
    expect(a.dependencies.size).toBe(0);
    await a.get('d', () => 3); // cached again without dependencies
    await a.invalidate('s');
    expect(a.peek('d')).toBe(3);
  });

  it('cycles terminate', async () => {
    const a = await make({ redis: false });
    await a.get('x', () => 1, { dependsOn: ['z'] });
    await a.get('y', () => 2, { dependsOn: ['x'] });
    await a.get('z', () => 3, { dependsOn: ['y', 'z'] });
    await a.get('other', () => 4);
    await a.invalidate('y');
    expect([a.peek('x'), a.peek('y'), a.peek('z'), a.peek('other')]).toEqual([undefined, undefined, undefined, 4]);
  });

  it('I1: an in-flight load of a dependent is poisoned by a remote invalidation of its source', async () => {
    const a = await make();
    const b = await make();
    let release!: (v: string) => void;
    const gate = new Promise<string>((r) => { release = r; });
    const inFlight = a.get('order:9:total', () => gate, { dependsOn: ['order_line:17:price'] });
    const applied = waitForEvent(a, 'received');
    await b.invalidate('order_line:17:price');
    await applied;
    release('old total');
    expect(await inFlight).toBe('old total');
    expect(a.peek('order:9:total')).toBeUndefined();
    expect(a.stats.loadsDiscarded).toBe(1);
  });

  it('entries dropped by a tag take their dependents along', async () => {
    const a = await make({ redis: false });
    await a.get('product:1', () => 1, { tags: ['category:7'] });
    await a.get('category:7:page', () => 'html', { dependsOn: ['product:1'] });
    await a.invalidateTags('category:7');
    expect(a.peek('category:7:page')).toBeUndefined();
  });

  it('a fan-out of 10,000 transitive dependents goes out as ONE stream entry', async () => {
    const a = await make();
    const b = await make();
    // A tree: root -> 100 mid keys -> 100 leaves each = 10,100 dependents.
    await b.get('root', () => 1);
    for (let i = 0; i < 100; i++) {
      await b.get(`mid:${i}`, () => 1, { dependsOn: ['root'] });
      for (let j = 0; j < 100; j++) await b.get(`leaf:${i}:${j}`, () => 1, { dependsOn: [`mid:${i}`] });
    }
    expect(b.size).toBe(10_101);
    const before = await streamLength();
    const received = waitForEvent<{ dropped: number }>(b, 'received');
    await a.invalidate('root');
    expect((await received).dropped).toBe(10_101);
    expect(b.size).toBe(0);
    expect((await streamLength()) - before).toBe(1);
  });
});

describe('declared rules (cache.dependencies.declare)', () => {
  it('fills the target pattern with the source placeholders, transitively', async () => {
    const a = await make();
    const b = await make();
    for (const c of [a, b]) {
      c.dependencies
        .declare('order:{id}:total', { on: ['order:{id}:discount', 'order:{id}:subtotal'] })
        .declare('order:{id}:summary', { on: 'order:{id}:total' });
      for (const k of ['order:9:discount', 'order:9:total', 'order:9:summary', 'order:10:total']) await c.get(k, () => k);
    }
    const received = waitForEvent<{ dropped: number }>(b, 'received');
    await a.invalidate('order:9:discount');
    expect((await received).dropped).toBe(3);
    for (const c of [a, b]) {
      expect(c.peek('order:9:total')).toBeUndefined();
      expect(c.peek('order:9:summary')).toBeUndefined();
      expect(c.peek('order:10:total')).toBe('order:10:total');
    }
  });

  it('maps a field of another record with via (partner.company_name on company.name)', async () => {
    const a = await make({ redis: false });
    const partnersOf = new Map([['7', ['1', '2']], ['8', ['3']]]);
    a.dependencies.declare('partner:{p}:company_name', {
      on: 'company:{c}:name',
      via: ({ c }) => (partnersOf.get(c!) ?? []).map((p) => `partner:${p}:company_name`),
    });
    for (const p of ['1', '2', '3']) await a.get(`partner:${p}:company_name`, () => `co of ${p}`);
    await a.invalidate('company:7:name');
    expect([a.peek('partner:1:company_name'), a.peek('partner:2:company_name'), a.peek('partner:3:company_name')])
      .toEqual([undefined, undefined, 'co of 3']);
  });

  it('a via that throws is counted; the other drops still happen', async () => {
    const a = await make({ redis: false });
    const errors: unknown[] = [];
    a.on('error', (e) => errors.push(e));
    a.dependencies.declare('x:{id}', { on: 'y:{id}', via: () => { throw new Error('boom'); } });
    await a.get('y:1', () => 1);
    await a.invalidate('y:1');
    expect(a.peek('y:1')).toBeUndefined();
    expect(a.dependencies.ruleErrors).toBe(1);
    expect(errors).toHaveLength(1);
  });

  it('rejects a target placeholder that no source binds, naming it', async () => {
    const a = await make({ redis: false });
    expect(() => a.dependencies.declare('partner:{p}:company_name', { on: 'company:{c}:name' })).toThrow(/\{p\}.*via/);
    expect(() => a.dependencies.declare('x', { on: [] })).toThrow(/rule\.on/);
  });
});

describe('batch', () => {
  it('invalidations made inside, across awaits, go out as one entry', async () => {
    const a = await make();
    const b = await make();
    for (const k of ['p:1', 'p:2', 'p:3']) await b.get(k, () => k);
    const published: { ids: string[]; keys: number; tags: number }[] = [];
    a.on('published', (p) => published.push(p));
    const received = waitForEvent<{ keys: number; tags: number }>(b, 'received');
    const result = await a.batch(async () => {
      await a.invalidate('p:1');
      await new Promise((r) => setImmediate(r));
      await a.invalidate('p:2', 'p:3');
      await a.invalidateTags('cat:1');
      return 'done';
    });
    expect(result).toBe('done');
    expect(published).toEqual([expect.objectContaining({ keys: 3, tags: 1, ids: [expect.any(String)] })]);
    expect(await received).toMatchObject({ keys: 3, tags: 1 });
    expect(b.size).toBe(0);
  });

  it('publishes what was invalidated even when the function throws', async () => {
    const a = await make();
    const b = await make();
    await b.get('p:1', () => 1);
    const received = waitForEvent(b, 'received');
    await expect(a.batch(async () => {
      await a.invalidate('p:1');
      throw new Error('later step failed');
    })).rejects.toThrow('later step failed');
    await received;
    expect(b.peek('p:1')).toBeUndefined();
  });

  it('does not capture invalidations made concurrently outside the batch', async () => {
    const a = await make();
    const published: { keys: number }[] = [];
    a.on('published', (p) => published.push(p));
    let resume!: () => void;
    const paused = new Promise<void>((r) => { resume = r; });
    const batch = a.batch(async () => {
      await a.invalidate('in:1');
      await paused;
    });
    await a.invalidate('out:1'); // resolves now: not held by the batch
    resume();
    await batch;
    expect(published.map((p) => p.keys)).toEqual([1, 1]);
  });
});
