import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of Postgres that can lose the answer to one statement: after
 * `loseRepliesAfter(re)`, the first client message matching `re` (e.g. the simple-protocol
 * `COMMIT`) is forwarded to Postgres, but nothing Postgres sends back on that connection reaches
 * the client any more. `cut()` then destroys every connection: the client saw its statement
 * sent and the connection lost, while Postgres executed it (an ambiguous COMMIT).
 */
export class PgProxy {
  readonly #server: Server;
  readonly #pairs = new Set<[Socket, Socket]>();
  #lose: RegExp | undefined;
  #onMatch: (() => void) | undefined;
  port = 0;

  private constructor(targetPort: number) {
    this.#server = createServer((client) => {
      const upstream = connect(targetPort, '127.0.0.1');
      const pair: [Socket, Socket] = [client, upstream];
      this.#pairs.add(pair);
      let deaf = false;
      client.on('data', (chunk: Buffer) => {
        if (this.#lose !== undefined && this.#lose.test(chunk.toString('latin1'))) {
          this.#lose = undefined;
          deaf = true;
          this.#onMatch?.();
        }
        upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => { if (!deaf) client.write(chunk); });
      const done = (): void => {
        client.destroy();
        upstream.destroy();
        this.#pairs.delete(pair);
      };
      client.on('error', done).on('close', done);
      upstream.on('error', done).on('close', done);
    });
  }

  static async start(targetPort = 5432): Promise<PgProxy> {
    const p = new PgProxy(targetPort);
    await new Promise<void>((r) => p.#server.listen(0, '127.0.0.1', r));
    const addr = p.#server.address();
    p.port = typeof addr === 'object' && addr ? addr.port : 0;
    return p;
  }

  /** A connection string through the proxy, from one to Postgres (same user, database, options). */
  urlFor(target: string): string {
    const u = new URL(target);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  /** Resolves when a client message matching `re` has been forwarded; its replies are lost. */
  loseRepliesAfter(re: RegExp): Promise<void> {
    this.#lose = re;
    return new Promise((resolve) => { this.#onMatch = resolve; });
  }

  cut(): void {
    for (const [a, b] of this.#pairs) { a.destroy(); b.destroy(); }
    this.#pairs.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}
