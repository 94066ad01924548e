import { productsTable } from '../protocol.js';
import type { Scenario, ScenarioContext } from '../scenario.js';
import { cachebus, SidecarProcess } from '../sidecar-proc.js';

const sidecars = new WeakMap<ScenarioContext, SidecarProcess>();
const outbox = (ctx: ScenarioContext): string => `${ctx.infra.schema}.cachebus_outbox`;
const triggerArgs = (ctx: ScenarioContext): string[] => [
  '--table', `${ctx.infra.schema}.products`, '--entity', 'product', '--database', ctx.infra.databaseUrl, '--outbox-table', outbox(ctx),
];

/**
 * Updates made straight in PostgreSQL by a separate connection (as psql would), not through
 * any worker. Triggers (`cachebus install-triggers`) record each changed key in an outbox table
 * in the same transaction; the sidecar (`cachebus sidecar`) drains it onto the bus.
 */
export const externalWrites: Scenario = {
  name: 'external writes',
  summary: 'UPDATEs straight in Postgres (as psql would) reach the caches through trigger → outbox → sidecar',
  bus: true,
  expect: 'bounded',

  // pglite-socket serves every connection from one PGlite session and holds all other
  // connections while one is inside a transaction: the relay's transactions then stall the
  // whole demo, and the row would measure PGlite, not the bridge.
  unavailable: (ctx) => (ctx.infra.pgSource === 'pglite' ? 'needs a real PostgreSQL (set DATABASE_URL); PGlite runs one session for all connections' : undefined),

  async setup(ctx) {
    await cachebus(['install-triggers', ...triggerArgs(ctx), '--namespace', ctx.namespace]);
    sidecars.set(ctx, await SidecarProcess.start({
      namespace: ctx.namespace, prefix: ctx.infra.prefix, redis: ctx.redisUrl, database: ctx.infra.databaseUrl, outbox: outbox(ctx),
    }));
    ctx.notes.push('writes by a separate connection, relayed by cachebus sidecar');
  },

  externalWriter(ctx) {
    const sql = `UPDATE ${productsTable(ctx.infra.schema)} SET version = version + 1, price = price + 1 WHERE id = $1 RETURNING version`;
    return async (id) => {
      const r = await ctx.infra.pool.query<{ version: string }>(sql, [id]);
      return { v: Number(r.rows[0]?.version), at: Date.now() };
    };
  },

  async teardown(ctx) {
    await sidecars.get(ctx)?.stop();
    sidecars.delete(ctx);
    await cachebus(['install-triggers', ...triggerArgs(ctx), '--uninstall']).catch(() => undefined);
  },
};
