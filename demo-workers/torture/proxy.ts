import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP forwarder (between one worker and Redis, or between the app and Postgres). `stall(ms)` stops forwarding in both
 * directions for a while (a silent network stall: no RST, no FIN, the bytes are kept and
 * delivered afterwards), as a congested or partitioned link does. `jitter(ms, maxDelayMs)`
 * delays the requests of some connections by a random time for a while, in order on each
 * connection but not across them: two requests sent on two connections may arrive in either order.
 */
export class StallProxy {
  readonly #server: Server;
  readonly #pairs = new Set<[Socket, Socket]>();
  #stalled = false;
  #held: [Socket, Buffer][] = [];
  port = 0;

  #refusing = false;
  #jitterMaxMs = 0;
  #jitterEpoch = 0;
  #random: () => number = Math.random;

  private constructor(targetPort: number) {
    this.#server = createServer((client) => {
      if (this.#refusing) { client.destroy(); return; }
      const upstream = connect(targetPort, '127.0.0.1');
      const pair: [Socket, Socket] = [client, upstream];
      this.#pairs.add(pair);
      // Requests (client → server) may be jittered; `due` keeps them in order on this connection.
      let due = 0;
      let queued = 0;
      // Per fault, half the connections are slow (a random delay per request), half are not: a
      // request on a slow one is overtaken by the requests sent meanwhile on the others.
      let slowIn = -1;
      let slow = false;
      const send = (to: Socket, chunk: Buffer): void => {
        if (this.#stalled) this.#held.push([to, chunk]);
        else if (!to.destroyed) to.write(chunk);
      };
      const pipe = (from: Socket, to: Socket, jittered: boolean): void => {
        from.on('data', (chunk: Buffer) => {
          if (!jittered || (this.#jitterMaxMs === 0 && queued === 0)) { send(to, chunk); return; }
          const t = Date.now();
          if (slowIn !== this.#jitterEpoch) { slowIn = this.#jitterEpoch; slow = this.#random() < 0.5; }
          due = Math.max(due, t + (this.#jitterMaxMs === 0 || !slow ? 0 : this.#random() * this.#jitterMaxMs));
          queued++;
          setTimeout(() => { queued--; send(to, chunk); }, due - t);
        });
      };
      pipe(client, upstream, true);
      pipe(upstream, client, false);
      const done = (): void => {
        client.destroy();
        upstream.destroy();
        this.#pairs.delete(pair);
      };
      for (const s of pair) {
        s.on('error', done);
        s.on('close', done);
      }
    });
  }

  static async start(targetPort: number): Promise<StallProxy> {
    const p = new StallProxy(targetPort);
    await new Promise<void>((resolve) => p.#server.listen(0, '127.0.0.1', resolve));
    p.port = (p.#server.address() as { port: number }).port;
    return p;
  }

  get stalled(): boolean { return this.#stalled; }

  /** Holds every byte for `ms`, then delivers them in order and forwards again. */
  async stall(ms: number): Promise<void> {
    this.#stalled = true;
    await new Promise((r) => setTimeout(r, ms));
    this.#stalled = false;
    for (const [to, chunk] of this.#held.splice(0)) if (!to.destroyed) to.write(chunk);
  }

  /** Closes every new connection at once for `ms` (a server refusing logins); open ones stay. */
  async refuse(ms: number): Promise<void> {
    this.#refusing = true;
    await new Promise((r) => setTimeout(r, ms));
    this.#refusing = false;
  }

  get refusing(): boolean { return this.#refusing; }

  /**
   * For `ms`, delays every request of half the connections (drawn per connection) by a random
   * 0…`maxDelayMs`, in order per connection, with `random` (seeded by the caller).
   */
  async jitter(ms: number, maxDelayMs: number, random: () => number): Promise<void> {
    this.#random = random;
    this.#jitterEpoch++;
    this.#jitterMaxMs = maxDelayMs;
    await new Promise((r) => setTimeout(r, ms));
    this.#jitterMaxMs = 0;
  }

  get jittering(): boolean { return this.#jitterMaxMs > 0; }

  async close(): Promise<void> {
    for (const [a, b] of this.#pairs) { a.destroy(); b.destroy(); }
    this.#pairs.clear();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
