/** The piscina task module of each torture worker: every thread has its own cache on the same bus. */
import { workerData } from 'node:worker_threads';
import pg from 'pg';
import { onThreadClose, threadCache } from '../../worker-runtime/piscina/index.js';
import type { ReadAnswer, TortureWorkerConfig } from './layout.js';
import { paths, type Paths, type Value } from './reads.js';

const cfg = workerData as TortureWorkerConfig & { redisUrl: string };
const pool = new pg.Pool({ connectionString: cfg.databaseUrl, max: 2 });
pool.on('error', () => undefined);
let ready: Promise<Paths> | undefined;

/** The thread's cache; a failed open (Redis stalled or restarting under the nemesis) is tried again on the next read. */
function open(): Promise<Paths> {
  if (ready === undefined) {
    const p = threadCache<Value>({
      redis: cfg.redisUrl, prefix: cfg.prefix, namespace: cfg.namespace, maxEntries: 10_000, maxStaleMs: cfg.maxStaleMs, pg: pool,
    }).then((cache) => {
      cache.on('error', () => undefined);
      return paths(cache, pool, cfg);
    });
    ready = p;
    p.catch(() => { if (ready === p) ready = undefined; });
  }
  return ready;
}
void open().catch(() => undefined);
onThreadClose(async () => { await (await ready?.catch(() => undefined))?.wb.close(); await pool.end(); });

export default async function read(id: number): Promise<ReadAnswer> {
  return (await open()).read(id);
}
