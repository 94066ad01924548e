import cluster from 'node:cluster';
import { hostname } from 'node:os';
import { threadId } from 'node:worker_threads';

/** Labels every cachebus series carries: both bounded (no key names, ever). */
export type BaseLabels = { readonly namespace: string; readonly worker: string };

/**
 * The `worker` label of this process or thread: `CACHEBUS_WORKER` if set; else, in a worker
 * forked by `startCluster`, `<host>:w<slot index>` (the slot survives restarts, so a restarted
 * worker continues the same series); in another node:cluster worker `<host>:w<cluster worker
 * id>` (a new id, hence a new series, after each fork); else `<host>:<pid>`. With
 * `:t<threadId>` in a worker thread.
 */
export function defaultWorkerLabel(): string {
  const env = process.env.CACHEBUS_WORKER;
  if (env) return env;
  const slot = process.env.CACHEBUS_CLUSTER === '1' ? process.env.CACHEBUS_WORKER_INDEX : undefined;
  const base = cluster.isWorker && slot !== undefined && /^\d+$/.test(slot)
    ? `${hostname()}:w${slot}`
    : cluster.isWorker && cluster.worker ? `${hostname()}:w${cluster.worker.id}` : `${hostname()}:${process.pid}`;
  return threadId === 0 ? base : `${base}:t${threadId}`;
}
