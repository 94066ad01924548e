/**
 * Issue 12, case 10: the write script appends the invalidation itself. A writer that dies right
 * after its script (before any other command) leaves no worker stale. The writer's death is a
 * chaos wrapper on its own connection: the reply of the script arrives, then the connection is
 * cut, so nothing it would send next (an XADD) ever reaches Redis.
 */
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { busKeys } from '../bus/keys.js';
import { writeBehindKeys } from '../bus/keys.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { writeBehind } from '../worker-runtime/write-behind/write-behind.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until } from './helpers/wait.js';
import { createItems, ITEMS } from './fixtures/wb-db.js';

const NS = 'wb';
let prefix: string;
let schema: TestSchema;
let cleanups: (() => Promise<unknown>)[];

beforeEach(async () => {
  prefix = randomPrefix();
  schema = await TestSchema.create();
  await createItems(schema);
  cleanups = [];
});
afterEach(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await cleanupPrefix(prefix);
  await schema.drop();
});

async function newCache(redis: string | Redis = REDIS_URL): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis, namespace: NS, prefix, maxEntries: 1000 });
  c.on('error', () => undefined);
  cleanups.push(() => c.close());
  return c;
}

describe('write-behind: one atomic step for "state changed" and "tell the others" (issue 12 case 10)', () => {
  it('a writer that dies right after its write script leaves no other worker stale', async () => {
    await schema.pool.query(`INSERT INTO items (id, version, val, n) VALUES (1, 1, 'old', 0)`);
    const reader = await newCache();
    const load = async (): Promise<{}> => (await schema.pool.query('SELECT id, version, val, n FROM items WHERE id = 1')).rows[0];
    expect(await reader.get('items:1', load)).toMatchObject({ val: 'old' });

    const client = new Redis(REDIS_URL);
    client.on('error', () => undefined);
    cleanups.push(async () => client.disconnect());
    const writer = await newCache(client);
    const items = await writeBehind(writer, ITEMS, { pg: schema.url, flushDelayMs: 60_000 });
    cleanups.push(() => items.close());
    // Chaos: the first script reply kills the writer's command connection for good.
    const evalsha = client.evalsha.bind(client) as (...a: unknown[]) => Promise<unknown>;
    let scripts = 0;
    (client as unknown as { evalsha: (...a: unknown[]) => Promise<unknown> }).evalsha = async (...a) => {
      const r = await evalsha(...a);
      if (scripts++ === 0) client.disconnect();
      return r;
    };
    await items.write({ id: 1, val: 'new', n: 1 }).catch(() => undefined); // acknowledged or not, the row is durable
    expect(scripts).toBe(1);
    const check = new Redis(REDIS_URL);
    cleanups.push(async () => check.disconnect());
    expect(await check.hget(writeBehindKeys(busKeys(prefix, NS), 'items').overlay, '1')).toContain('"new"');
    // The other worker is told: its copy goes, and its next read takes the pending row.
    await until(() => reader.peek('items:1') === undefined, 5_000, 'the reader to drop its old copy');
    expect(await reader.get('items:1', load)).toMatchObject({ val: 'new' });
  });
});
