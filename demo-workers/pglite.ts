import { once } from 'node:events';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { DemoInfraError } from './errors.js';

/** An in-process PGlite served over the PostgreSQL wire protocol on a free loopback port. */
export interface PgliteServer {
  readonly url: string;
  stop(): Promise<void>;
}

/** Starts PGlite + pglite-socket in a worker thread (dev dependencies: present in a clone, maybe not in an install). */
export async function startPglite(): Promise<PgliteServer> {
  try {
    const require = createRequire(import.meta.url);
    require.resolve('@electric-sql/pglite');
    require.resolve('@electric-sql/pglite-socket');
  } catch {
    throw new DemoInfraError(
      'The demo needs PostgreSQL: set DATABASE_URL, start one on 127.0.0.1:5432, or run it from a clone with dev dependencies installed (it then uses an in-process PGlite).',
    );
  }
  const worker = new Worker(new URL('./pglite-thread.js', import.meta.url));
  const [started] = (await Promise.race([
    once(worker, 'message'),
    once(worker, 'error').then(([err]) => { throw new DemoInfraError(`PGlite did not start: ${(err as Error)?.message ?? err}`); }),
  ])) as [{ conn: string }];
  let stopping: Promise<void> | undefined;
  return {
    url: `postgres://postgres@${started.conn}/postgres`,
    stop: () => (stopping ??= (async () => {
      const stopped = once(worker, 'message');
      worker.postMessage('stop');
      await Promise.race([stopped, new Promise((r) => setTimeout(r, 5_000).unref())]);
      await worker.terminate();
    })()),
  };
}
