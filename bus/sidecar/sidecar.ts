import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * One background duty of the sidecar (outbox relay, write-behind flusher, stream trimming...).
 * Services must survive Redis/Postgres outages on their own (retry with backoff) and never
 * throw out of `start`'s background work.
 */
export interface SidecarService {
  readonly name: string;
  start(): Promise<void>;
  /** Finishes in-flight work and stops; idempotent. */
  stop(): Promise<void>;
  /** Health as seen by this service. */
  health(): { ok: boolean; detail?: unknown };
}

/** Something that renders Prometheus text (a prom-client Registry fits). */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface SidecarOptions {
  /** Port of the HTTP server for /metrics and /health; 0 picks a free one; undefined: no server. */
  readonly port?: number | undefined;
  /** Host to bind. @defaultValue `'127.0.0.1'` */
  readonly host?: string | undefined;
  readonly metrics?: MetricsSource | undefined;
  /** How long `stop` waits for the services before it gives up on the stragglers. @defaultValue `10_000` */
  readonly stopTimeoutMs?: number | undefined;
}

/** Runs services side by side and serves `/metrics` and `/health`. */
export class Sidecar {
  readonly #services: SidecarService[] = [];
  readonly #opts: SidecarOptions;
  #server: Server | undefined;
  #stopping: Promise<string[]> | undefined;

  constructor(opts: SidecarOptions = {}) {
    this.#opts = opts;
  }

  add(service: SidecarService): this {
    this.#services.push(service);
    return this;
  }

  get services(): readonly SidecarService[] { return this.#services; }

  /** The HTTP port actually bound (after start). */
  get port(): number | undefined {
    return (this.#server?.address() as AddressInfo | null)?.port;
  }

  health(): { ok: boolean; services: Record<string, { ok: boolean; detail?: unknown }> } {
    const services = Object.fromEntries(this.#services.map((s) => [s.name, s.health()]));
    return { ok: Object.values(services).every((h) => h.ok), services };
  }

  async start(): Promise<void> {
    for (const s of this.#services) await s.start();
    if (this.#opts.port === undefined) return;
    const server = createServer((req, res) => {
      void (async () => {
        if (req.url === '/health') {
          const h = this.health();
          res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(h));
        } else if (req.url === '/metrics' && this.#opts.metrics) {
          res.writeHead(200, { 'content-type': this.#opts.metrics.contentType }).end(await this.#opts.metrics.metrics());
        } else {
          res.writeHead(404).end();
        }
      })().catch((err: unknown) => res.writeHead(500).end(String(err)));
    });
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#opts.port, this.#opts.host ?? '127.0.0.1', () => resolve());
    });
  }

  /**
   * Stops every service at once (one slow service must not keep the others running), waits at
   * most `stopTimeoutMs`, then closes the HTTP server. Resolves with the names of the services
   * that had not stopped by then (empty when all did). Idempotent.
   */
  stop(): Promise<string[]> {
    this.#stopping ??= (async () => {
      const pending = new Set(this.#services.map((s) => s.name));
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(this.#services.map(async (s) => {
          await s.stop();
          pending.delete(s.name);
        })),
        new Promise<void>((r) => { timer = setTimeout(r, this.#opts.stopTimeoutMs ?? 10_000); }),
      ]);
      clearTimeout(timer);
      const server = this.#server;
      if (server) {
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      }
      return [...pending];
    })();
    return this.#stopping;
  }

}
