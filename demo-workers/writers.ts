import type pg from 'pg';
import { type Cache } from '../worker-runtime/index.js';
import { writeBehind } from '../worker-runtime/write-behind/index.js';
import type { Product, WorkerConfig, WriteReply } from './protocol.js';
import { productKey } from './protocol.js';

/** What a write mode can use inside an HTTP worker (or one of its threads). */
export interface WriterContext {
  readonly cache: Cache<Product>;
  readonly pool: pg.Pool;
  /** Quoted, schema-qualified products table. */
  readonly table: string;
  readonly config: WorkerConfig;
}

/** Makes one write to product `id` and reports the version it made visible, and when. */
export type Writer = (id: number) => Promise<WriteReply>;

/**
 * How a scenario's workers write (WorkerConfig.writer names one). `writer` runs in each HTTP
 * worker's main thread; `prepareThread`, when present, in each piscina thread before it serves
 * (a thread that only reads may still need to read the way the writer writes).
 */
export interface WriteMode {
  writer(ctx: WriterContext): Promise<{ write: Writer; close?(): Promise<void> }>;
  prepareThread?(ctx: WriterContext): Promise<void>;
}

/**
 * Write-through in SQL: UPDATE … RETURNING the new version (autocommit), note the time the
 * commit returned, then `invalidate` (published after the truth changed: I4). A failed publish
 * is reported, never hidden: the row still changed.
 */
const sql: WriteMode = {
  async writer(ctx) {
    const text = `UPDATE ${ctx.table} SET version = version + 1, price = price + 1 WHERE id = $1 RETURNING version`;
    return {
      write: async (id) => {
        const r = await ctx.pool.query<{ version: string }>(text, [id]);
        const at = Date.now();
        const row = r.rows[0];
        if (row === undefined) throw new Error(`no product ${id}`);
        let pub: 0 | 1 = 1;
        try {
          await ctx.cache.invalidate(productKey(id));
        } catch {
          pub = 0;
        }
        return { v: Number(row.version), at, pub };
      },
    };
  },
};

const productEntity = (c: WorkerConfig) => ({
  name: 'product', table: `${c.schema}.products`, key: 'id', version: 'version', columns: ['name', 'price'],
});

/**
 * Write-behind: `write` resolves once the row is durable in Redis (its version assigned there);
 * the sidecar's flusher upserts it into PostgreSQL later. Every cache (threads included) reads
 * the pending overlay before PostgreSQL, so nobody reads the old row meanwhile (I6).
 */
const writeBehindMode: WriteMode = {
  async writer(ctx) {
    const wb = await writeBehind(ctx.cache as Cache<{}>, productEntity(ctx.config), { pg: ctx.pool });
    let price = 1000;
    return {
      write: async (id) => {
        const r = await wb.write({ id, name: `product ${id}`, price: price++ });
        return { v: Number(r.version), at: Date.now(), pub: 1 };
      },
      close: () => wb.close(),
    };
  },
  async prepareThread(ctx) {
    await writeBehind(ctx.cache as Cache<{}>, productEntity(ctx.config), { pg: ctx.pool });
  },
};

/** Write modes by name. A scenario that writes another way adds its mode here. */
export const writeModes: Record<string, WriteMode> = { sql, 'write-behind': writeBehindMode };
