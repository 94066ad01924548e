import { productsTable } from '../protocol.js';
import type { Scenario, ScenarioContext } from '../scenario.js';
import { SidecarProcess } from '../sidecar-proc.js';

const sidecars = new WeakMap<ScenarioContext, SidecarProcess>();

/**
 * Workers write through the write-behind API: a write is acknowledged once the row is durable
 * in Redis, and the sidecar's flusher (`cachebus sidecar`) upserts it into PostgreSQL later.
 * Meanwhile every cache reads the pending row before PostgreSQL, so no reader sees the old row.
 * The truth is the acknowledged version.
 */
export const writeBehind: Scenario = {
  name: 'write-behind',
  summary: 'writes acknowledged once durable in Redis, flushed to Postgres later: nobody reads the old row',
  bus: true,
  expect: 'bounded',
  writer: 'write-behind',

  async setup(ctx) {
    sidecars.set(ctx, await SidecarProcess.start({
      namespace: ctx.namespace, prefix: ctx.infra.prefix, redis: ctx.redisUrl, database: ctx.infra.databaseUrl,
    }));
    ctx.notes.push('flushed to Postgres by cachebus sidecar');
  },

  /** No lost write: every acknowledged version reaches PostgreSQL (waits up to 10 s for the flusher). */
  async verify(ctx, latest) {
    const started = Date.now();
    const sql = `SELECT id, version FROM ${productsTable(ctx.infra.schema)}`;
    for (;;) {
      const rows = (await ctx.infra.pool.query<{ id: number; version: string }>(sql)).rows;
      const behind = rows.filter((r) => Number(r.version) < (latest.get(r.id) ?? 0)).length;
      if (behind === 0) {
        ctx.notes.push(`every acknowledged write in Postgres ${Date.now() - started} ms after the load`);
        return true;
      }
      if (Date.now() - started > 10_000) {
        ctx.notes.push(`${behind} rows not flushed to Postgres 10 s after the load`);
        return false;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  },

  async teardown(ctx) {
    await sidecars.get(ctx)?.stop();
    sidecars.delete(ctx);
  },
};
