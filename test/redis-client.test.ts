import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { adoptClient, isClientLike, isClusterClient } from '../bus/redis-like.js';
import { createCache, InvalidOptionError } from '../worker-runtime/index.js';
import { REDIS_URL } from './helpers/redis.js';

/**
 * The app's own ioredis client, recognised by shape (ioredis 5 or 6, any copy: test/pack.test.ts
 * runs both majors from an installed package). Here: what the shape check accepts and refuses.
 */
const opened: { disconnect(): void }[] = [];
afterEach(() => { for (const c of opened.splice(0)) c.disconnect(); });

describe('a caller\'s ioredis client', () => {
  it('Redis and Cluster are recognised without instanceof; options objects and URLs are not clients', () => {
    const r = new Redis(REDIS_URL, { lazyConnect: true });
    const c = new Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true });
    opened.push(r, c);
    expect(isClientLike(r) && isClientLike(c)).toBe(true);
    expect([isClusterClient(r), isClusterClient(c)]).toEqual([false, true]);
    expect(isClientLike({ host: '127.0.0.1', port: 6379 })).toBe(false);
    expect(isClientLike(REDIS_URL)).toBe(false);
  });

  it("a client created with replyMapping: 'resp3' (ioredis 6: maps as objects) is refused at once, naming the option", async () => {
    const r = new Redis(REDIS_URL, { lazyConnect: true, replyMapping: 'resp3' } as RedisOptions);
    opened.push(r);
    expect(() => adoptClient(r)).toThrow(/options\.redis: .*replyMapping: 'resp3'/);
    await expect(createCache({ redis: r, namespace: 'shop', maxEntries: 10 })).rejects.toBeInstanceOf(InvalidOptionError);
    expect(r.status).toBe('wait'); // nothing was sent on it
  });
});
