import type { RedisClient } from './connection.js';

/** A Redis command that did not answer in time (a stalled connection, a silent partition). */
export class StalledError extends Error {}

/**
 * Makes every command on one connection settle: it rejects when the connection closes or when
 * no reply came within its time. With auto-resend off, ioredis drops a command in flight on
 * reconnect, and a silent partition never answers; a reader waiting on either would wait forever.
 */
export class CommandGuard {
  readonly #conn: RedisClient;
  readonly #what: string;
  /** Rejects every guarded command in flight (ioredis drops them silently on a reconnect). */
  readonly #inFlight = new Set<(err: Error) => void>();

  constructor(conn: RedisClient, what: string) {
    this.#conn = conn;
    this.#what = what;
  }

  /** Settles with `p`, or rejects when `rejectAll` is called or no reply came within `ms`. */
  run<T>(p: Promise<T>, ms: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const arm = (): void => {
        timer = setTimeout(() => fail(new StalledError(`Redis did not answer the ${this.#what} within ${ms} ms`)), ms);
      };
      const done = (): void => { clearTimeout(timer); this.#conn.off('ready', arm); this.#inFlight.delete(fail); };
      const fail = (err: Error): void => { done(); reject(err); };
      // The clock starts once the command can be sent: connecting has its own timeout (Bus.open, backoff).
      if (this.#conn.status === 'ready') arm();
      else this.#conn.once('ready', arm);
      this.#inFlight.add(fail);
      p.then((v) => { done(); resolve(v); }, (err: unknown) => { done(); reject(err); });
    });
  }

  /** Fails every command in flight (the connection closed, or its owner did). */
  rejectAll(err: Error): void {
    for (const reject of [...this.#inFlight]) reject(err);
  }
}
