import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createCache, type Cache, errors } from '../worker-runtime/index.js';
import { entity, transaction } from '../worker-runtime/postgres/index.js';
import { canonicalKey, type KeyKind } from '../bus/key-types.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { waitForEvent } from './helpers/wait.js';

/** A real pool that counts the statements it runs (reads of rows only: SELECTs, not the one catalogue read of the key type). */
class CountingPool extends pg.Pool {
  selects = 0;
  override query(...args: unknown[]): never {
    if (typeof args[0] === 'string' && /^\s*SELECT/i.test(args[0]) && !/pg_attribute/.test(args[0])) this.selects++;
    return (super.query as (...a: unknown[]) => never)(...args);
  }
}

let prefix: string;
let schema: TestSchema;
let pool: CountingPool;
const caches: Cache<{}>[] = [];

interface Product extends Record<string, unknown> { id: number; name: string; price: string; version: string }
const def = { name: 'products', table: 'products', key: 'id', version: 'version', columns: ['name', 'price'] };

async function make(): Promise<Cache<{}>> {
  const c = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 1000, pg: pool });
  caches.push(c);
  return c;
}

beforeEach(async () => {
  prefix = randomPrefix();
  schema = await TestSchema.create();
  pool = new CountingPool({ connectionString: schema.url, max: 4 });
  await schema.pool.query(`
    CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL, version bigint NOT NULL DEFAULT 1);
    INSERT INTO products (id, name, price) SELECT g, 'p' || g, g FROM generate_series(1, 50) g;`);
});

afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  await pool.end();
  await schema.drop();
  await cleanupPrefix(prefix);
});

describe('cache.entity', () => {
  it('reads through by primary key, then serves from the cache', async () => {
    const c = await make();
    const products = entity<Product>(c, def);
    expect(await products.get(42)).toEqual({ id: 42, name: 'p42', price: '42', version: '1' });
    expect(await products.get(42)).toEqual({ id: 42, name: 'p42', price: '42', version: '1' });
    expect(pool.selects).toBe(1);
    expect(c.peek('products:42')).toMatchObject({ id: 42 });
    expect(await products.get(999)).toBeUndefined();
    expect(c.peek('products:999')).toBeUndefined();
  });

  it('getMany loads every miss with ONE WHERE key = ANY($1) query, in the order asked', async () => {
    const c = await make();
    const products = entity<Product>(c, def);
    await products.get(2);
    pool.selects = 0;
    const rows = await products.getMany([1, 2, 3, 999, 4, 3]);
    expect(rows.map((r) => r?.id)).toEqual([1, 2, 3, undefined, 4, 3]);
    expect(pool.selects).toBe(1);
    expect(await products.getMany([1, 3, 4])).toHaveLength(3);
    expect(pool.selects).toBe(1);
  });

  it('update writes through, bumps the version, and other workers drop the row after COMMIT', async () => {
    const a = await make();
    const b = await make();
    const pa = entity<Product>(a, def);
    const pb = entity<Product>(b, def);
    await pa.get(42);
    await pb.get(42);
    const received = waitForEvent(b, 'received');
    const updated = await pa.update(42, { price: '9.99' });
    expect(updated).toEqual({ id: 42, name: 'p42', price: '9.99', version: '2' });
    await received;
    expect(b.peek('products:42')).toBeUndefined();
    expect(a.peek('products:42')).toBeUndefined();
    expect(await pb.get(42)).toMatchObject({ price: '9.99', version: '2' });
    expect(await pa.update(12345, { price: '1' })).toBeUndefined();
  });

  it('upsert inserts or updates (ON CONFLICT); delete removes; both publish', async () => {
    const a = await make();
    const products = entity<Product>(a, def);
    const published: { keys: number }[] = [];
    a.on('published', (p) => published.push(p));
    expect(await products.upsert({ id: 100, name: 'new', price: '1' } as Product)).toMatchObject({ id: 100, version: '1' });
    expect(await products.upsert({ id: 100, name: 'renamed', price: '2' } as Product)).toMatchObject({ name: 'renamed', version: '2' });
    expect(await products.delete(100)).toBe(true);
    expect(await products.delete(100)).toBe(false);
    expect(await products.get(100)).toBeUndefined();
    expect(published).toHaveLength(3);
  });

  it('values are parameters: a hostile string is stored as text', async () => {
    const a = await make();
    const products = entity<Product>(a, def);
    const evil = "x'); DROP TABLE products; --";
    await products.update(1, { name: evil });
    expect((await products.get(1))?.name).toBe(evil);
    expect((await schema.pool.query('SELECT count(*)::int AS n FROM products')).rows[0].n).toBe(50);
  });

  it('unknown entities and columns are typed errors; bad identifiers are refused up front', async () => {
    const a = await make();
    const products = entity<Product>(a, def);
    expect(() => entity(a, 'nope')).toThrow(errors.UnknownEntityError);
    await expect(products.update(1, { colour: 'red' } as Partial<Product>)).rejects.toMatchObject({ code: 'E_UNKNOWN_ENTITY' });
    await expect(products.update(1, { id: 2 } as Partial<Product>)).rejects.toMatchObject({ code: 'E_INVALID_VALUE' });
    expect(() => entity(a, { name: 'bad', columns: ['name; DROP TABLE products'] })).toThrow(errors.InvalidOptionError);
    expect(() => entity(a, def)).toThrow(/already registered/);
    expect(entity(a, 'products')).toBe(products);
  });

  it('inside a transaction: reads see its writes, nothing is shared or published before COMMIT', async () => {
    const a = await make();
    const b = await make();
    const pa = entity<Product>(a, def);
    await entity<Product>(b, def).get(5);
    const published: unknown[] = [];
    a.on('published', (p) => published.push(p));
    await transaction(a, async (tx) => {
      await pa.update(5, { price: '0.5' });
      await pa.update(6, { price: '0.6' });
      expect((await pa.get(5))?.price).toBe('0.5');
      expect((await pa.getMany([5, 6, 7])).map((r) => r?.price)).toEqual(['0.5', '0.6', '7']);
      expect(a.peek('products:5')).toBeUndefined();
      expect(published).toEqual([]);
      tx.rollback();
    });
    expect(published).toEqual([]);
    expect(b.peek('products:5')).toMatchObject({ price: '5' });
    expect((await pa.get(5))?.price).toBe('5');

    const received = waitForEvent<{ keys: number }>(b, 'received');
    await transaction(a, async () => {
      await pa.update(5, { price: '0.5' });
      await pa.update(6, { price: '0.6' });
    });
    expect(await received).toMatchObject({ keys: 2 });
    expect(published).toHaveLength(1);
    expect(b.peek('products:5')).toBeUndefined();
  });

  it('canonical keys (issue 12 case 12): \'007\' is row 7 and an upper-case uuid its lower-case self, in get, update, upsert, delete and invalidate', async () => {
    await schema.pool.query(`CREATE TABLE tokens (id uuid PRIMARY KEY, label text NOT NULL);
      INSERT INTO tokens VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'one')`);
    const a = await make();
    const b = await make();
    const pa = entity<Product>(a, def);
    const pb = entity<Product>(b, def);
    // One entry, whatever the spelling.
    expect(await pb.get(7)).toMatchObject({ id: 7 });
    expect(await pb.get('007')).toMatchObject({ id: 7 });
    expect(await pb.getMany([' 7 ', '+7', '0007'])).toEqual([expect.objectContaining({ id: 7 }), expect.objectContaining({ id: 7 }), expect.objectContaining({ id: 7 })]);
    expect(pool.selects).toBe(1);
    expect(pb.key('007')).toBe('products:7');
    // A write through another spelling invalidates the entry every worker holds.
    let received = waitForEvent(b, 'received');
    expect(await pa.delete('007')).toBe(true);
    await received;
    expect(b.peek('products:7')).toBeUndefined();
    expect(await pb.get(8)).toMatchObject({ id: 8 });
    received = waitForEvent(b, 'received');
    await pa.invalidate('08');
    await received;
    expect(b.peek('products:8')).toBeUndefined();
    expect(await pb.get(9)).toMatchObject({ id: 9 });
    received = waitForEvent(b, 'received');
    await pa.upsert({ id: '009', name: 'nine', price: '9' } as unknown as Product);
    await received;
    expect(b.peek('products:9')).toBeUndefined();

    const ta = entity(a, { name: 'tokens', columns: ['label'] });
    const tb = entity(b, { name: 'tokens', columns: ['label'] });
    const upper = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11';
    expect(await tb.get(upper)).toMatchObject({ label: 'one' });
    expect(b.peek('tokens:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')).toMatchObject({ label: 'one' });
    received = waitForEvent(b, 'received');
    await ta.update('{A0EEBC999C0B4EF8BB6D6BB9BD380A11}', { label: 'two' });
    await received;
    expect(await tb.get('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')).toMatchObject({ label: 'two' });

    // An id the column cannot hold is refused before anything is sent.
    const published: unknown[] = [];
    a.on('published', (p) => published.push(p));
    await expect(pa.update('7x', { price: '1' })).rejects.toMatchObject({ code: 'E_INVALID_VALUE' });
    await expect(ta.delete('not-a-uuid')).rejects.toMatchObject({ code: 'E_INVALID_VALUE' });
    expect(published).toEqual([]);
  });

  it('canonicalKey agrees with Postgres for integer, numeric and uuid spellings', async () => {
    const cases: [KeyKind, string, string][] = [];
    for (const v of ['007', '-0', '+12', ' 42 ', '-00100', '0', '9223372036854775807']) cases.push(['integer', v, `'${v}'::bigint::text`]);
    for (const v of ['7.500', '007.0', '-0.00', '1e3', '1.5E-3', '.5', '5.', '-12.3400e2', '0.000', '100', '1.23e-10', 'NaN'])
      cases.push(['numeric', v, `trim_scale(${v === 'NaN' ? "'NaN'" : `'${v}'`}::numeric)::text`]);
    for (const v of ['A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', 'a0eebc999c0b4ef8bb6d6bb9bd380a11'])
      cases.push(['uuid', v, `'${v}'::uuid::text`]);
    for (const [kind, input, sql] of cases) {
      const pgText = (await schema.pool.query<{ t: string }>(`SELECT ${sql} AS t`)).rows[0]!.t;
      expect([kind, input, canonicalKey(kind, input)]).toEqual([kind, input, pgText]);
    }
    expect(() => canonicalKey('integer', '1.5')).toThrow(/not an integer/);
    expect(() => canonicalKey('integer', 2 ** 60)).toThrow(/exact integer/);
  });
});
