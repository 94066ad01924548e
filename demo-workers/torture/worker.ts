/**
 * One torture worker (forked by startCluster): one cache, every write path, a tiny HTTP API the
 * primary drives. Uses only the package's public API.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { createCache, onShutdown, workerConfig, workerIndex, workerReady, writeBehind, type Cache } from '../../worker-runtime/index.js';
import { groupOf, tagOf, type ReadAnswer, type TortureReady, type TortureWorkerConfig, type WorkerStats, type WriteAnswer } from './layout.js';

type Value = { v?: number; version?: string | number };
const cfg = workerConfig<TortureWorkerConfig>();
const table = `"${cfg.schema}".products`;
const pool = new pg.Pool({ connectionString: cfg.databaseUrl, max: 4 });
pool.on('error', () => undefined);

const cache: Cache<Value> = await createCache<Value>({
  redis: cfg.redisUrls[workerIndex()]!, prefix: cfg.prefix, namespace: cfg.namespace, maxEntries: 10_000, maxStaleMs: cfg.maxStaleMs, pg: pool,
});
cache.on('error', () => undefined);
const def = { table: `${cfg.schema}.products`, key: 'id', version: 'version', columns: ['name', 'price'] };
const wb = await writeBehind(cache as Cache<{}>, { ...def, name: 'wb' }, { pg: pool });
const ent = cache.entity<{ id: number; name: string; price: number; version: string }>({ ...def, name: 'ent' });

const version = (x: Value | undefined): number => (x === undefined ? -1 : x.v ?? (x.version === undefined ? -1 : Number(x.version)));
const loadVersion = async (id: number): Promise<Value | undefined> => {
  const r = await pool.query<{ version: string }>(`SELECT version FROM ${table} WHERE id = $1`, [id]);
  return r.rows[0] === undefined ? undefined : { v: Number(r.rows[0].version) };
};
const noPublish = cfg.mutation === 'no-publish';

async function read(id: number): Promise<ReadAnswer> {
  const key = `product:${id}`;
  switch (groupOf(id)) {
    case 'wb': {
      const got = wb.get(id);
      return { v: version(await got as Value | undefined), h: 0 };
    }
    case 'entity': return { v: version(await ent.get(id) as Value | undefined), h: 0 };
    case 'tags': {
      const got = cache.get(key, () => loadVersion(id), { tags: [tagOf(id)] });
      return { v: version(await got), h: got instanceof Promise ? 0 : 1 };
    }
    case 'deps': {
      const got = cache.get(`summary:${id}`, () => loadVersion(id), { dependsOn: [key] });
      return { v: version(await got), h: got instanceof Promise ? 0 : 1 };
    }
    default: {
      const got = cache.get(key, () => loadVersion(id));
      return { v: version(await got), h: got instanceof Promise ? 0 : 1 };
    }
  }
}

const bump = `UPDATE ${table} SET version = version + 1, price = price + 1 WHERE id = $1 RETURNING version`;
let price = 1_000;
let flip = 0;

/** Publishes after the row changed; a failed publish is reported (pub 0), never hidden. */
async function publish(fn: () => Promise<void>): Promise<0 | 1> {
  if (noPublish) return 1;
  try {
    await fn();
    return 1;
  } catch {
    return 0;
  }
}

async function sqlWrite(id: number, after: () => Promise<void>): Promise<WriteAnswer> {
  const r = await pool.query<{ version: string }>(bump, [id]);
  const v = Number(r.rows[0]!.version);
  return { v, pub: await publish(after), how: 'sql' };
}

async function txWrite(id: number): Promise<WriteAnswer> {
  // A PublishError after COMMIT rejects: the row changed, the primary counts the write as uncertain.
  const v = await cache.transaction(pool, async (tx) => {
    const r = await tx.query<{ version: string }>(bump, [id]);
    if (!noPublish) tx.invalidate(`product:${id}`);
    return Number(r.rows[0]!.version);
  });
  return { v, pub: 1, how: 'tx' };
}

async function write(id: number): Promise<WriteAnswer> {
  const key = `product:${id}`;
  switch (groupOf(id)) {
    case 'wb': {
      const r = await wb.write({ id, name: `row ${id}`, price: price++ });
      return { v: Number(r.version), pub: 1, how: 'write-behind' };
    }
    case 'entity': {
      const row = await ent.update(id, { price: price++ });
      if (row === undefined) throw new Error(`no row ${id}`);
      return { v: Number(row.version), pub: 1, how: 'entity' };
    }
    case 'tags': return sqlWrite(id, () => cache.invalidateTags(tagOf(id)));
    case 'deps': return txWrite(id);
    default: return (flip++ & 1) === 0 ? sqlWrite(id, () => cache.invalidate(key)) : txWrite(id);
  }
}

function stats(): WorkerStats {
  const g = cache.stats.gaps;
  return { pid: process.pid, gaps: Object.values(g).reduce((a, b) => a + b, 0), gapClears: cache.stats.clears.gap };
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const m = /^\/(r|w|block)\/(\d+)$/.exec(req.url ?? '');
  if (m === null) {
    if (req.url === '/stats') reply(res, 200, stats());
    else reply(res, 404, { error: 'not found' });
    return;
  }
  const n = Number(m[2]);
  if (m[1] === 'r') reply(res, 200, await read(n));
  else if (m[1] === 'w') reply(res, 200, await write(n));
  else {
    reply(res, 200, { blocked: n });
    // The reply leaves first; then this event loop is busy for n ms (timers, the reader, HTTP all wait).
    setImmediate(() => { const end = Date.now() + n; while (Date.now() < end) { /* busy */ } });
  }
}

const server = createServer((req, res) => {
  req.resume();
  route(req, res).catch((err: unknown) => reply(res, 500, { error: String((err as Error)?.message ?? err) }));
});
server.keepAliveTimeout = 30_000;
await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, resolve));

onShutdown(() => new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections(); }));
onShutdown(async () => { await wb.close(); await cache.close(); await pool.end().catch(() => undefined); });

workerReady({ port: (server.address() as AddressInfo).port, pid: process.pid } satisfies TortureReady);
