import cluster from 'node:cluster';
import { hostname } from 'node:os';
import { threadId } from 'node:worker_threads';

/** Labels every cachebus series carries: both bounded (no key names, ever). */
export type BaseLabels = { readonly namespace: string; readonly worker: string };

/**
 * The `worker` label of this process or thread: `CACHEBUS_WORKER` if set, else
 * `<host>:w<cluster worker id>` in a cluster worker or `<host>:<pid>`, with `:t<threadId>` in a
 * worker thread. One value per worker for its lifetime.
 */
export function defaultWorkerLabel(): string {
  const env = process.env.CACHEBUS_WORKER;
  if (env) return env;
  const base = cluster.isWorker && cluster.worker ? `${hostname()}:w${cluster.worker.id}` : `${hostname()}:${process.pid}`;
  return threadId === 0 ? base : `${base}:t${threadId}`;
}
