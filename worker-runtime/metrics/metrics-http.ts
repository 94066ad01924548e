import cluster from 'node:cluster';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import type { MetricsSource } from '../../bus/sidecar/sidecar.js';

export type { MetricsSource };

/** What `/health` reports: 200 when `ok`, 503 otherwise, with the JSON body. */
export type HealthCheck = () => { ok: boolean; [detail: string]: unknown } | Promise<{ ok: boolean; [detail: string]: unknown }>;

export interface MetricsServerOptions {
  /** Port to listen on; 0 picks a free one. */
  readonly port: number;
  /**
   * Host to bind. @defaultValue `process.env.CACHEBUS_METRICS_HOST ?? '127.0.0.1'` (set
   * `CACHEBUS_METRICS_HOST=0.0.0.0` in a container so that Prometheus can reach it)
   */
  readonly host?: string;
  /** `/health` answer. @defaultValue `{ ok: true }` */
  readonly health?: HealthCheck;
}

/** A running `/metrics` + `/health` server. */
export interface MetricsServer {
  /** The port actually bound. */
  readonly port: number;
  /** Stops listening and closes open connections. Idempotent. */
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` from `source` and `GET /health` on a small HTTP server. A failing
 * source answers 500 with the message; it never crashes the process.
 *
 * The port is this process's own, also in a node:cluster worker (`exclusive: true`): workers
 * never share it through the primary (scrapes would alternate between workers). Give each
 * worker its own port (`9464 + workerIndex()`), or serve the aggregate from the primary with
 * `serveClusterMetrics`; a port already taken rejects with EADDRINUSE.
 */
export async function serveMetrics(source: MetricsSource, options: MetricsServerOptions): Promise<MetricsServer> {
  const health = options.health ?? (() => ({ ok: true }));
  const server: Server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405).end();
      } else if (path === '/metrics') {
        const body = await source.metrics();
        res.writeHead(200, { 'content-type': source.contentType }).end(body);
      } else if (path === '/health') {
        const h = await health();
        res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(h));
      } else {
        res.writeHead(404).end();
      }
    })().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`error: ${String((err as Error)?.message ?? err)}\n`);
    });
  });
  const host = options.host ?? process.env.CACHEBUS_METRICS_HOST ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE' && cluster.isWorker) {
        err.message += ': in a node:cluster worker each worker needs its own metrics port (e.g. 9464 + workerIndex()),' +
          ' or serve every worker from the primary with serveClusterMetrics';
      }
      reject(err);
    });
    server.listen({ port: options.port, host, exclusive: true }, () => {
      server.removeAllListeners('error');
      resolve();
    });
  });
  let closing: Promise<void> | undefined;
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
