import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { Redis } from 'ioredis';
import { hasRedisServer, OwnedRedis, pingRedis } from './redis-server.js';
import { DemoInfraError } from './errors.js';
import { startPglite, type PgliteServer } from './pglite.js';
import { productsTable } from './protocol.js';

export type RedisSource = 'REDIS_URL' | 'loopback' | 'owned';
export type PgSource = 'DATABASE_URL' | 'loopback' | 'pglite';


export const LOOPBACK_REDIS = 'redis://127.0.0.1:6379';
export const LOOPBACK_PG = 'postgres://postgres@127.0.0.1:5432/postgres';

/** Servers the demo uses, and what it created in them (dropped by `close`). */
export interface Infra {
  readonly redisUrl: string;
  readonly redisSource: RedisSource;
  /** Set when the demo started redis-server itself (the chaos scenario may restart it). */
  readonly ownedRedis: OwnedRedis | undefined;
  readonly databaseUrl: string;
  readonly pgSource: PgSource;
  /** Random key prefix of every Redis key the demo writes. */
  readonly prefix: string;
  /** Random schema holding the demo's table. */
  readonly schema: string;
  /** The primary's own connections (seeding, external writes). */
  readonly pool: pg.Pool;
  /** Drops the schema and the keys, stops what the demo started. Idempotent. */
  close(): Promise<void>;
}

/** CACHEBUS_DEMO_NO_LOOPBACK=1 skips the loopback servers, as on a fresh machine (tests the embedded fallbacks). */
const skipLoopback = (): boolean => process.env.CACHEBUS_DEMO_NO_LOOPBACK === '1';

async function probePg(url: string, timeoutMs: number): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs });
  c.on('error', () => undefined);
  try {
    await c.connect();
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** REDIS_URL; else 127.0.0.1:6379; else a throwaway redis-server; else a DemoInfraError. */
async function resolveRedis(): Promise<{ url: string; source: RedisSource; owned: OwnedRedis | undefined }> {
  const env = process.env.REDIS_URL;
  if (env) {
    if (!(await pingRedis(env, 3_000))) throw new DemoInfraError(`REDIS_URL is set but Redis does not answer there; fix REDIS_URL or unset it.`);
    return { url: env, source: 'REDIS_URL', owned: undefined };
  }
  if (!skipLoopback() && await pingRedis(LOOPBACK_REDIS, 500)) return { url: LOOPBACK_REDIS, source: 'loopback', owned: undefined };
  if (hasRedisServer()) {
    const owned = await OwnedRedis.start();
    return { url: owned.url, source: 'owned', owned };
  }
  throw new DemoInfraError(
    'The demo needs Redis: set REDIS_URL, start one on 127.0.0.1:6379 (e.g. `docker run -p 6379:6379 redis:7`), or install redis-server (`apt-get install redis-server`, `brew install redis`) so the demo can start its own.',
  );
}

/** DATABASE_URL; else postgres on 127.0.0.1:5432; else an in-process PGlite on a free port. */
async function resolvePg(): Promise<{ url: string; source: PgSource; pglite: PgliteServer | undefined }> {
  const env = process.env.DATABASE_URL;
  if (env) {
    if (!(await probePg(env, 5_000))) throw new DemoInfraError('DATABASE_URL is set but PostgreSQL does not answer there; fix DATABASE_URL or unset it.');
    return { url: env, source: 'DATABASE_URL', pglite: undefined };
  }
  if (!skipLoopback() && await probePg(LOOPBACK_PG, 1_500)) return { url: LOOPBACK_PG, source: 'loopback', pglite: undefined };
  const pglite = await startPglite();
  return { url: pglite.url, source: 'pglite', pglite };
}

async function cleanupPrefix(url: string, prefix: string): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  r.on('error', () => undefined);
  try {
    await r.connect();
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) await r.unlink(...keys);
    } while (cursor !== '0');
  } catch {
    // best effort: the server may be gone
  } finally {
    r.disconnect();
  }
}

/** Finds (or starts) Redis and PostgreSQL, creates the schema and seeds `products` rows at version 1. */
export async function openInfra(products: number): Promise<Infra> {
  const redis = await resolveRedis();
  let pgr: Awaited<ReturnType<typeof resolvePg>>;
  try {
    pgr = await resolvePg();
  } catch (err) {
    await redis.owned?.dispose();
    throw err;
  }
  const id = randomBytes(4).toString('hex');
  const prefix = `cachebus-demo-${id}`;
  const schema = `cachebus_demo_${id}`;
  const pool = new pg.Pool({ connectionString: pgr.url, max: 4 });
  pool.on('error', () => undefined);
  let closing: Promise<void> | undefined;
  const infra: Infra = {
    redisUrl: redis.url, redisSource: redis.source, ownedRedis: redis.owned,
    databaseUrl: pgr.url, pgSource: pgr.source, prefix, schema, pool,
    close: () => (closing ??= (async () => {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
      await pool.end().catch(() => undefined);
      await pgr.pglite?.stop();
      if (redis.owned) await redis.owned.dispose();
      else await cleanupPrefix(redis.url, prefix);
    })()),
  };
  try {
    await pool.query(`CREATE SCHEMA "${schema}"`);
    await pool.query(`CREATE TABLE ${productsTable(schema)} (
      id integer PRIMARY KEY, name text NOT NULL, price integer NOT NULL, version bigint NOT NULL)`);
    await pool.query(
      `INSERT INTO ${productsTable(schema)} (id, name, price, version)
       SELECT g, 'product ' || g, 100 + g, 1 FROM generate_series(1, $1::int) AS g`,
      [products],
    );
  } catch (err) {
    await infra.close();
    throw err;
  }
  return infra;
}
