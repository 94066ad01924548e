import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Cluster } from 'ioredis';
import { keySlot } from '../bus/cluster.js';
import { busKeys, writeBehindKeys, writeBehindShared } from '../bus/keys.js';
import { OutboxRelay } from '../bus/outbox/relay.js';
import { installTriggers } from '../bus/outbox/triggers.js';
import { Flusher } from '../bus/write-behind/flusher.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { writeBehind } from '../worker-runtime/write-behind/write-behind.js';
import { createItems, ITEMS, itemsById } from './fixtures/wb-db.js';
import { TestSchema } from './helpers/pg.js';
import { randomPrefix } from './helpers/redis.js';
import { TestCluster } from './helpers/redis-cluster.js';
import { until, waitForEvent } from './helpers/wait.js';

// Write-behind (queue, overlay, flusher) and the outbox relay on a 3-master Redis Cluster
// started by this file: every key of a namespace is hash-tagged `{namespace}`, the BullMQ
// queue prefix included, so their Lua scripts and MULTIs stay in one slot.
const unsupported = TestCluster.unsupported();
if (unsupported) console.warn(`cluster service tests skipped: ${unsupported}`);

let cluster: TestCluster;
let prefix: string;
let schema: TestSchema;
let cleanups: (() => Promise<unknown>)[] = [];

describe.skipIf(unsupported !== undefined)('write-behind and outbox on Redis Cluster', () => {
  beforeAll(async () => { cluster = await TestCluster.start({ masters: 3 }); });
  afterAll(async () => { await cluster?.dispose(); });
  beforeEach(async () => {
    prefix = randomPrefix();
    schema = await TestSchema.create();
  });
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    cleanups = [];
    await schema.drop();
  });

  it('keeps every write-behind key and the BullMQ queue of a namespace in one slot', () => {
    const keys = busKeys(prefix, 'wb');
    const wb = writeBehindKeys(keys, 'items');
    const shared = writeBehindShared(keys);
    const slots = new Set([keys.stream, wb.overlay, wb.dirty, wb.version, wb.tick, shared.entities, shared.dead,
      `${shared.queuePrefix}:${shared.queueName}:wait`, `${shared.queuePrefix}:${shared.queueName}:meta`].map(keySlot));
    expect(slots.size).toBe(1);
  });

  it('write-behind: a write given cluster seed nodes is durable, served, and flushed to Postgres', async () => {
    await createItems(schema);
    const cache: Cache<{}> = await createCache<{}>({ redis: cluster.seeds, namespace: 'wb', prefix, maxEntries: 1000 });
    cleanups.push(() => cache.close());
    const items = await writeBehind(cache, ITEMS, { pg: schema.url, flushDelayMs: 20 });
    cleanups.push(() => items.close());
    const r = await items.write({ id: 1, val: 'a', n: 1 });
    expect(cache.peek('items:1')).toEqual({ id: 1, val: 'a', n: 1, version: r.version });
    const flusher = await Flusher.open({ redis: cluster.seeds, namespace: 'wb', prefix, pg: schema.url, sweepIntervalMs: 50, leaseMs: 2000 });
    cleanups.push(() => flusher.close());
    await until(async () => (await itemsById(schema.pool, schema.name)).get(1)?.version === r.version, 20_000, 'the row in Postgres');
    await until(async () => (await items.pending(1)) === undefined, 20_000, 'the overlay entry to be removed');
  });

  it('outbox relay (given an ioredis Cluster): an external UPDATE invalidates caches on the cluster', async () => {
    const product = { name: 'products', key: 'id', columns: ['name', 'price'] };
    await schema.pool.query('CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL)');
    await schema.pool.query("INSERT INTO products VALUES (1, 'p1', 1)");
    await installTriggers(schema.pool, product, { namespace: 'shop' });
    const client: Cluster = cluster.client();
    cleanups.push(async () => client.disconnect());
    const relay = new OutboxRelay({ pg: schema.url, redis: client, namespace: 'shop', prefix, pollMs: 50 });
    cleanups.push(() => relay.stop());
    await relay.start();
    const cache = await createCache<{}>({ redis: cluster.seeds, namespace: 'shop', prefix, maxEntries: 100 });
    cleanups.push(() => cache.close());
    await cache.get('products:1', () => ({ price: 1 }));
    const got = waitForEvent(cache, 'received', () => true, 20_000);
    await schema.pool.query('UPDATE products SET price = 2 WHERE id = 1');
    await got;
    expect(cache.peek('products:1')).toBeUndefined();
  });
});
