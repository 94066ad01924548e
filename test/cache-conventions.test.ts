import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createCache, type Cache, InvalidOptionError, LoadTimeoutError, type CacheOptions, type PolicyName } from '../worker-runtime/index.js';
import { entity } from '../worker-runtime/postgres/index.js';
import { durationMs } from '../worker-runtime/options.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until, waitForEvent } from './helpers/wait.js';
import { TestSchema } from './helpers/pg.js';

/** What users of other caches (BentoCache, cache-manager) expect: durations, a logger, load timeouts, has/delete, null. */
let prefix: string;
const caches: Cache[] = [];

async function make(extra: Partial<CacheOptions> = {}): Promise<Cache> {
  const c = await createCache({ redis: REDIS_URL, namespace: 'conv', prefix, maxEntries: 1000, ...extra });
  caches.push(c);
  return c;
}

const gate = <T>() => {
  let open!: (v: T) => void;
  const p = new Promise<T>((r) => { open = r; });
  return { p, open };
};

beforeEach(() => { prefix = randomPrefix(); });
afterEach(async () => {
  vi.restoreAllMocks();
  await Promise.all(caches.splice(0).map((c) => c.close()));
  await cleanupPrefix(prefix);
});

describe('durations', () => {
  it('reads ms and strings with a unit; refuses anything else with InvalidOptionError', () => {
    expect(durationMs(250, 'ttl')).toBe(250);
    expect(durationMs('250ms', 'ttl')).toBe(250);
    expect(durationMs('30s', 'ttl')).toBe(30_000);
    expect(durationMs('5m', 'ttl')).toBe(300_000);
    expect(durationMs('1h', 'ttl')).toBe(3_600_000);
    expect(durationMs('1.5h', 'ttl')).toBe(5_400_000);
    expect(durationMs('2d', 'ttl')).toBe(172_800_000);
    for (const bad of ['', '1 fortnight', '-1s', '0s', 'h', '1', 0, -5, 1.5, NaN, null, {}]) {
      expect(() => durationMs(bad, 'options.ttl'), String(bad)).toThrow(InvalidOptionError);
    }
  });

  it("options.ttl as '…s' expires entries; an entry's own ttl string overrides it", async () => {
    const c = await make({ redis: false, ttl: '1h' });
    await c.set('short', 1, { ttl: '40ms' });
    await c.set('long', 2);
    await until(() => !c.has('short'), 5000, 'short entry expired');
    expect(c.has('long')).toBe(true); // the default '1h' was read as an hour, not 1 ms
    const policy = await make({ redis: false, policy: 'ttl', ttl: '40ms', maxEntries: undefined });
    await policy.set('k', 1);
    await until(() => !policy.has('k'), 5000, 'ttl-policy entry expired');
  });

  it('a bad ttl or timeout is refused before any effect', async () => {
    await expect(make({ redis: false, ttl: '1 fortnight' as never })).rejects.toThrow(InvalidOptionError);
    await expect(make({ redis: false, timeout: 'soon' as never })).rejects.toThrow(InvalidOptionError);
    const c = await make({ redis: false });
    await expect(c.set('k', 1, { ttl: 'forever' as never })).rejects.toThrow(InvalidOptionError);
    expect(c.has('k')).toBe(false);
    let calls = 0;
    await expect(c.get('k', () => { calls++; return 1; }, { ttl: '-1s' as never })).rejects.toThrow(InvalidOptionError);
    await expect(c.get('k', () => { calls++; return 1; }, { timeout: 'x' as never })).rejects.toThrow(InvalidOptionError);
    expect(calls).toBe(0);
  });
});

describe('options given as undefined', () => {
  it('take their defaults (as with exactOptionalPropertyTypes users write `pg: process.env.DATABASE_URL`)', async () => {
    const c = await make({ redis: false, prefix: undefined, policy: undefined, maxStaleMs: undefined, relay: undefined, ttl: undefined, timeout: undefined, logger: undefined });
    expect(await c.get('k', () => 1)).toBe(1);
    expect(c.get('k', () => 2)).toBe(1);
  });
});

describe('logger', () => {
  it('gets background errors as logger.error({ err, source }, message) instead of console.error', async () => {
    const logged: [object, string | undefined][] = [];
    const logger = { error: (obj: object, msg?: string) => { logged.push([obj, msg]); }, warn: () => {} };
    const stderr = vi.spyOn(console, 'error').mockImplementation(() => {});
    const c = await make({ redis: false, logger });
    c.on('drop', () => { throw new Error('listener failed'); });
    await c.set('k', 1);
    await c.invalidate('k'); // the drop listener throws: a background error, not the caller's
    expect(logged).toHaveLength(1);
    const [obj, msg] = logged[0]!;
    expect(msg).toBe('listener failed');
    expect((obj as { err: Error }).err).toBeInstanceOf(Error);
    expect((obj as { source: string }).source).toBe('cachebus:conv');
    expect(stderr).not.toHaveBeenCalled();
  });

  it('a logger without error/warn is refused; a throwing logger falls back to stderr', async () => {
    await expect(make({ redis: false, logger: { info: () => {} } as never })).rejects.toThrow(InvalidOptionError);
    const stderr = vi.spyOn(console, 'error').mockImplementation(() => {});
    const c = await make({ redis: false, logger: { error: () => { throw new Error('logger down'); }, warn: () => {} } });
    c.on('drop', () => { throw new Error('listener failed'); });
    await c.set('k', 1);
    await c.invalidate('k');
    expect(stderr).toHaveBeenCalledWith('[cachebus:conv] listener failed');
  });
});

describe('logger.warn', () => {
  it("gets an entity's key-type warning instead of a process warning; an interface row type reads and writes", async () => {
    const schema = await TestSchema.create();
    try {
      await schema.pool.query('CREATE TABLE events (id oid PRIMARY KEY, title text)');
      await schema.pool.query("INSERT INTO events VALUES (7, 'launch')");
      const warned: [object, string | undefined][] = [];
      const processWarnings: Error[] = [];
      const onWarning = (w: Error): void => { processWarnings.push(w); };
      process.on('warning', onWarning);
      try {
        const c = await make({ redis: false, pg: schema.pool, logger: { error: () => {}, warn: (o, m) => { warned.push([o, m]); } } });
        interface Event { id: number; title: string }
        const events = entity<Event>(c, { name: 'events', key: 'id', columns: ['title'] });
        const row = await events.get(7);
        expect(row?.title).toBe('launch');
        expect(await events.update(7, { title: 'release' })).toMatchObject({ title: 'release' });
        expect(warned).toHaveLength(1);
        expect(warned[0]![0]).toMatchObject({ code: 'CACHEBUS_KEY_TYPE', entity: 'events', type: 'oid' });
        await new Promise<void>((r) => setImmediate(r)); // process warnings are emitted on the next tick
        expect(processWarnings.filter((w) => (w as { code?: string }).code === 'CACHEBUS_KEY_TYPE')).toEqual([]);
      } finally {
        process.off('warning', onWarning);
      }
    } finally {
      await Promise.all(caches.splice(0).map((c) => c.close()));
      await schema.drop();
    }
  });
});

describe('loader timeout', () => {
  it('rejects every waiter of the load with one LoadTimeoutError and stores nothing, even when the load ends later', async () => {
    const c = await make({ timeout: 30 });
    const g = gate<string>();
    let calls = 0;
    const loader = (): Promise<string> => { calls++; return g.p; };
    const waiters = [c.get('k', loader), c.get('k', loader), c.get('k', loader)].map((p) => Promise.resolve(p).catch((e: unknown) => e));
    const errs = await Promise.all(waiters);
    expect(calls).toBe(1); // single-flight
    expect(errs[0]).toBeInstanceOf(LoadTimeoutError);
    expect((errs[0] as LoadTimeoutError).code).toBe('E_LOAD_TIMEOUT');
    expect((errs[0] as LoadTimeoutError).key).toBe('k');
    expect(errs[1]).toBe(errs[0]);
    expect(errs[2]).toBe(errs[0]);
    expect(c.stats.loadTimeouts).toBe(1);
    g.open('late');
    await g.p;
    await Promise.resolve();
    expect(c.has('k')).toBe(false); // the late result was not stored
    // the next get loads again, and a load inside its timeout is stored
    expect(await c.get('k', () => 'fresh', { timeout: '1s' })).toBe('fresh');
    expect(c.peek('k')).toBe('fresh');
  });

  it("an entry's timeout overrides the cache's; a loader that throws at once leaves no timer", async () => {
    const c = await make({ redis: false, timeout: '1h' });
    const g = gate<number>();
    const err = await Promise.resolve(c.get('k', () => g.p, { timeout: 20 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoadTimeoutError);
    expect((err as LoadTimeoutError).timeoutMs).toBe(20);
    await expect(c.get('j', () => { throw new Error('sync'); })).rejects.toThrow('sync');
    expect(c.stats.loadTimeouts).toBe(1);
  });
});

describe('has / delete', () => {
  it('has answers what get would without loading or counting; delete invalidates the key in every worker', async () => {
    const a = await make();
    const b = await make();
    await a.set('k', 1);
    await b.get('k', () => 1);
    const hits = b.stats.hits, misses = b.stats.misses;
    expect(b.has('k')).toBe(true);
    expect(b.has('nope')).toBe(false);
    expect([b.stats.hits, b.stats.misses]).toEqual([hits, misses]);
    const dropped = waitForEvent(b, 'drop', (d: { key: string }) => d.key === 'k');
    await a.delete('k');
    expect(a.has('k')).toBe(false);
    await dropped;
    expect(b.has('k')).toBe(false);
  });
});

describe('null is a value', () => {
  for (const policy of ['lru', 'lfu', 'fifo', 'ttl'] as PolicyName[]) {
    it(`a loader's null is cached (${policy}) and dropped by an invalidation; undefined is not cached`, async () => {
      const c = await make({ policy, ttl: '1h' });
      let calls = 0;
      const load = (): null => { calls++; return null; };
      expect(await c.get('gone', load)).toBeNull();
      expect(c.get('gone', load)).toBeNull(); // a synchronous hit
      expect(calls).toBe(1);
      expect(c.has('gone')).toBe(true);
      expect(c.peek('gone')).toBeNull();
      await c.invalidate('gone');
      expect(c.has('gone')).toBe(false);
      await c.get('gone', load);
      expect(calls).toBe(2);
      let u = 0;
      await c.get('u', () => { u++; return undefined; });
      await c.get('u', () => { u++; return undefined; });
      expect(u).toBe(2);
      await c.set('s', null);
      expect(c.has('s')).toBe(true);
    });
  }
});
