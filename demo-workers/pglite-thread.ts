/**
 * Runs PGlite and its socket server in a worker thread of the primary: PGlite executes queries
 * synchronously (WASM), and on the primary's own thread it would stall the load driver and
 * skew every timestamp the truth checker takes.
 */
import { parentPort } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

const db = await PGlite.create();
// Every worker and thread has its own pool; PGlite runs one query at a time behind them.
const server = new PGLiteSocketServer({ db, port: 0, host: '127.0.0.1', maxConnections: 256 });
await server.start();
parentPort!.postMessage({ conn: server.getServerConn() });
parentPort!.on('message', (m: unknown) => {
  if (m !== 'stop') return;
  void (async () => {
    await server.stop().catch(() => undefined);
    await db.close().catch(() => undefined);
    parentPort!.postMessage({ stopped: true });
  })();
});
