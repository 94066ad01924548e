import type { RedisClient } from './connection.js';
import { PublishError } from './errors.js';
import { encode, type Invalidation } from './wire.js';

export interface PublisherOptions {
  readonly stream: string;
  readonly origin: string;
  readonly secret?: string | Buffer | undefined;
  readonly maxEntryBytes: number;
  /** Approximate MAXLEN retention; 0 disables it. */
  readonly streamMaxLen: number;
  /** When set, approximate MINID retention of entries younger than this many ms (instead of MAXLEN). */
  readonly streamMaxAgeMs?: number | undefined;
}

interface Pending {
  keys: Set<string>;
  tags: Set<string>;
  clear: boolean;
  promise: Promise<string[]>;
  resolve: (ids: string[]) => void;
  reject: (err: unknown) => void;
}

/**
 * Collects the invalidations made in one tick and writes them as one XADD (or a few, when
 * the batch is larger than maxEntryBytes) in one round trip.
 */
export class Publisher {
  readonly #client: RedisClient;
  readonly #opts: PublisherOptions;
  #pending: Pending | undefined;
  #inFlight = new Set<Promise<unknown>>();

  constructor(client: RedisClient, opts: PublisherOptions) {
    this.#client = client;
    this.#opts = opts;
  }

  /** Queues an invalidation; resolves with the stream IDs once the batch is in the stream. */
  publish(inv: Partial<Invalidation>): Promise<string[]> {
    let p = this.#pending;
    if (p === undefined) {
      let resolve!: (ids: string[]) => void, reject!: (err: unknown) => void;
      const promise = new Promise<string[]>((res, rej) => { resolve = res; reject = rej; });
      p = { keys: new Set(), tags: new Set(), clear: false, promise, resolve, reject };
      this.#pending = p;
      queueMicrotask(() => this.#flush());
    }
    if (inv.keys) for (const k of inv.keys) p.keys.add(k);
    if (inv.tags) for (const t of inv.tags) p.tags.add(t);
    if (inv.clear) p.clear = true;
    return p.promise;
  }

  /** Resolves once every publish issued so far has settled. */
  async flushed(): Promise<void> {
    while (this.#pending !== undefined || this.#inFlight.size > 0) {
      await Promise.allSettled([...this.#inFlight, ...(this.#pending ? [this.#pending.promise] : [])]);
    }
  }

  #flush(): void {
    const p = this.#pending;
    if (p === undefined) return;
    this.#pending = undefined;
    const o = this.#opts;
    const entries = encode(
      { keys: [...p.keys], tags: [...p.tags], clear: p.clear },
      { origin: o.origin, time: Date.now(), secret: o.secret, maxEntryBytes: o.maxEntryBytes },
    );
    const trim: (string | number)[] =
      o.streamMaxAgeMs !== undefined
        ? ['MINID', '~', `${Date.now() - o.streamMaxAgeMs}-0`]
        : o.streamMaxLen > 0 ? ['MAXLEN', '~', o.streamMaxLen] : [];
    const run = async (): Promise<string[]> => {
      if (entries.length === 1) {
        return [(await this.#client.xadd(o.stream, ...trim, '*', ...entries[0]!)) as string];
      }
      const pipe = this.#client.multi();
      for (const fields of entries) pipe.xadd(o.stream, ...trim, '*', ...fields);
      const res = (await pipe.exec()) ?? [];
      return res.map(([err, id]) => {
        if (err) throw err;
        return id as string;
      });
    };
    const done = run().then(p.resolve, (err: unknown) =>
      p.reject(new PublishError(`XADD to ${o.stream} failed: ${(err as Error)?.message ?? err}`, { cause: err })),
    );
    this.#inFlight.add(done);
    void done.finally(() => this.#inFlight.delete(done));
  }
}
