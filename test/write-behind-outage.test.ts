import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BackpressureError } from '../bus/errors.js';
import { busKeys, writeBehindKeys } from '../bus/keys.js';
import { Flusher } from '../bus/write-behind/flusher.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { writeBehind } from '../worker-runtime/write-behind/write-behind.js';
import { TestSchema } from './helpers/pg.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { until } from './helpers/wait.js';
import { createItems, doubleApplied, ITEMS, itemsById } from './fixtures/wb-db.js';

const NS = 'wb';
let prefix: string;
let schema: TestSchema;
let role: string;
let redis: Redis;
let cleanups: (() => Promise<unknown>)[];

/** The flusher logs in as a role of its own, so the test can refuse its logins and cut its sessions. */
beforeEach(async () => {
  prefix = randomPrefix();
  schema = await TestSchema.create();
  await createItems(schema);
  role = `cbwb_${randomBytes(5).toString('hex')}`;
  await schema.pool.query(`CREATE ROLE ${role} LOGIN`);
  await schema.pool.query(`GRANT USAGE ON SCHEMA ${schema.name} TO ${role}; GRANT ALL ON ALL TABLES IN SCHEMA ${schema.name} TO ${role}`);
  redis = new Redis(REDIS_URL);
  cleanups = [];
});
afterEach(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  redis.disconnect();
  await cleanupPrefix(prefix);
  await schema.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, [role]);
  await schema.pool.query(`DROP OWNED BY ${role}`);
  await schema.pool.query(`DROP ROLE ${role}`);
  await schema.drop();
});

function roleUrl(): string {
  const u = new URL(schema.url);
  u.username = role;
  return u.toString();
}

describe('write-behind: Postgres outage', () => {
  it('keeps accepting writes (up to maxPending, then a typed error) while Postgres refuses the flusher; afterwards all is flushed, none lost, none twice', async () => {
    const cache: Cache<{}> = await createCache<{}>({ redis: REDIS_URL, namespace: NS, prefix, maxEntries: 10_000 });
    cleanups.push(() => cache.close());
    const items = await writeBehind(cache, ITEMS, { pg: schema.url, flushDelayMs: 10, maxPending: 1500 });
    cleanups.push(() => items.close());
    const flusher = await Flusher.open({
      redis: REDIS_URL, namespace: NS, prefix, pg: roleUrl(), sweepIntervalMs: 100, leaseMs: 2000, retryBaseMs: 50, retryMaxMs: 400,
    });
    cleanups.push(() => flusher.close());
    const retries: string[] = [];
    flusher.on('retry', (r) => retries.push(r.code || r.message));
    flusher.on('error', () => undefined);

    // Write load: 8 loops over 3000 ids until told to stop; every acknowledged (id, version, value) kept.
    const acked = new Map<number, { version: bigint; val: string }>();
    const phase = { name: 'before', refused: 0, ackedInOutage: 0, stop: false };
    let seq = 0;
    const loop = async (): Promise<void> => {
      while (!phase.stop) {
        const id = Math.floor(Math.random() * 3000);
        const val = `v${seq++}`;
        try {
          const r = await items.write({ id, val, n: seq });
          const cur = acked.get(id);
          if (cur === undefined || cur.version < BigInt(r.version)) acked.set(id, { version: BigInt(r.version), val });
          if (phase.name === 'outage') phase.ackedInOutage++;
        } catch (err) {
          if (!(err instanceof BackpressureError)) throw err;
          phase.refused++;
          await new Promise((r) => setImmediate(r)); // yield; refused writes are retried with new values
        }
      }
    };
    const loops = Array.from({ length: 8 }, loop);
    await until(() => flusher.stats.rowsFlushed >= 1000, 30_000, 'a first 1000 rows flushed');

    // Outage: the role may no longer log in, and its sessions are cut.
    phase.name = 'outage';
    const outageStart = Date.now();
    await schema.pool.query(`ALTER ROLE ${role} NOLOGIN`);
    await schema.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, [role]);
    await until(() => retries.length >= 6 && phase.refused > 0 && Date.now() - outageStart >= 4000, 30_000, 'a few seconds of outage with back-pressure');
    expect(flusher.health().ok).toBe(false);
    expect(phase.ackedInOutage).toBeGreaterThan(0); // writes went on being accepted...
    const k = writeBehindKeys(busKeys(prefix, NS), 'items');
    expect(await redis.hlen(k.overlay)).toBe(1500); // ...up to maxPending, then refused (BackpressureError)
    const flushedInOutage = flusher.stats.rowsFlushed;

    phase.name = 'after';
    await schema.pool.query(`ALTER ROLE ${role} LOGIN`);
    await until(() => flusher.stats.rowsFlushed >= flushedInOutage + 2000, 30_000, 'flushing to resume');
    phase.stop = true;
    await Promise.all(loops);
    await until(async () => (await redis.hlen(k.overlay)) === 0 && (await redis.zcard(k.dirty)) === 0 && (await redis.zcard(k.claims)) === 0, 30_000, 'the overlay to drain');
    expect(flusher.health().ok).toBe(true);

    const db = await itemsById(schema.pool, schema.name);
    const problems: string[] = [];
    for (const [id, a] of acked) {
      const row = db.get(id);
      if (row === undefined) problems.push(`${id}: missing`);
      else if (BigInt(row.version) !== a.version || row.val !== a.val) problems.push(`${id}: ${row.version}/${row.val} != ${a.version}/${a.val}`);
    }
    expect(problems.slice(0, 10)).toEqual([]);
    expect(db.size).toBe(acked.size); // nothing that was refused or never acknowledged appeared
    expect(await doubleApplied(schema.pool, schema.name)).toEqual([]);
    expect(retries.some((c) => c === '28000' || c === '57P01' || /terminat|connect/i.test(c))).toBe(true);
  });
});
