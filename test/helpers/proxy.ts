import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of a server, for partition tests: `hold()` stops forwarding in both
 * directions (a silent network partition: no RST, no FIN; bytes are kept), `release()`
 * delivers what was held and resumes, `cut()` destroys every connection.
 */
export class ChaosProxy {
  readonly #server: Server;
  readonly #pairs = new Set<[Socket, Socket]>();
  #held = false;
  #backlog: [Socket, Buffer][] = [];
  port = 0;
  /** Connections accepted so far (a client that reconnects shows up here). */
  accepted = 0;

  private constructor(targetPort: number) {
    this.#server = createServer((client) => {
      this.accepted++;
      const upstream = connect(targetPort, '127.0.0.1');
      const pair: [Socket, Socket] = [client, upstream];
      this.#pairs.add(pair);
      const forward = (from: Socket, to: Socket): void => {
        from.on('data', (chunk: Buffer) => {
          if (this.#held) this.#backlog.push([to, chunk]);
          else to.write(chunk);
        });
      };
      forward(client, upstream);
      forward(upstream, client);
      const done = (): void => {
        client.destroy();
        upstream.destroy();
        this.#pairs.delete(pair);
      };
      client.on('error', done).on('close', done);
      upstream.on('error', done).on('close', done);
    });
  }

  static async start(targetPort: number): Promise<ChaosProxy> {
    const p = new ChaosProxy(targetPort);
    await new Promise<void>((r) => p.#server.listen(0, '127.0.0.1', r));
    const addr = p.#server.address();
    p.port = typeof addr === 'object' && addr ? addr.port : 0;
    return p;
  }

  get url(): string { return `redis://127.0.0.1:${this.port}`; }

  hold(): void {
    this.#held = true;
  }

  release(): void {
    this.#held = false;
    const backlog = this.#backlog;
    this.#backlog = [];
    for (const [to, chunk] of backlog) if (!to.destroyed) to.write(chunk);
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
