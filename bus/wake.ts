import type { RedisClient } from './connection.js';
import { duplicateForBlocking } from './connection.js';
import { decode, type DecodedEntry } from './wire.js';

export interface WakeOptions {
  /** The namespace's wake channel (busKeys().wake). */
  readonly channel: string;
  readonly origin: string;
  readonly secret?: string | Buffer | undefined;
  readonly maxEntryBytes: number;
}

export interface WakeHandlers {
  /** A decoded hint from another origin (keys, tags or clear of an entry just appended). Must not throw. */
  onHint(entry: DecodedEntry): void;
  onError(err: unknown): void;
}

/** Counters of the hint path (plain numbers). */
export interface WakeStats {
  /** Hints handed over. */
  hints: number;
  /** Messages on the channel that were not a valid hint (malformed, unsigned, foreign): ignored. */
  ignored: number;
}

/**
 * Hands one hint over: `read` decodes it (throwing when it is not a valid hint: counted as
 * ignored); a hint of this origin is skipped (applied locally when published); a handler that
 * throws is reported. Shared by the pub/sub hints and the same-host datagrams (bus/host-wake.ts).
 */
export function deliverHint(stats: WakeStats, h: WakeHandlers, origin: string, read: () => DecodedEntry): void {
  let entry: DecodedEntry;
  try {
    entry = read();
  } catch {
    stats.ignored++;
    return;
  }
  if (entry.origin === origin) return;
  stats.hints++;
  try {
    h.onHint(entry);
  } catch (err) {
    h.onError(err);
  }
}

/**
 * The pub/sub side of option `wake: 'pubsub'` (docs/wake-up.md). A subscriber connection of
 * its own receives, for each entry appended by a publisher in that mode, its ID and fields,
 * and hands the decoded invalidation over at once, before the stream reader gets the entry.
 *
 * **The stream stays the source of truth.** A hint is only ever an extra, early drop: the
 * reader still reads every entry with XREAD, checks its chain and applies it. Dropping keys is
 * always safe (a reload), so a hint needs no continuity proof, and a lost hint (subscriber
 * disconnected, message dropped) only means the drop comes with the stream entry, as without
 * this option. Hints are decoded exactly as entries are (size bound, version, signature when a
 * secret is set), so nothing is applied that the reader would refuse; what fails is ignored
 * quietly, since the stream copy of a real entry is counted by the reader.
 */
export class WakeHints {
  readonly stats: WakeStats = { hints: 0, ignored: 0 };
  readonly #conn: RedisClient;
  readonly #opts: WakeOptions;
  readonly #h: WakeHandlers;
  #closed = false;

  constructor(client: RedisClient, name: string, opts: WakeOptions, handlers: WakeHandlers) {
    this.#opts = opts;
    this.#h = handlers;
    // Its own connection: a subscribed connection takes no other commands. ioredis re-subscribes
    // after a reconnect; hints sent meanwhile are lost, and the stream delivers those entries.
    this.#conn = duplicateForBlocking(client, name);
    this.#conn.on('error', (err: unknown) => { if (!this.#closed) this.#h.onError(err); });
    this.#conn.on('message', (_channel: string, message: string) => this.#onMessage(message));
  }

  /** Subscribes. Resolves once Redis confirmed the subscription (hints before that are not needed: the stream has them). */
  async start(): Promise<void> {
    await this.#conn.subscribe(this.#opts.channel);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn.disconnect();
  }

  #onMessage(message: string): void {
    if (this.#closed) return;
    const { origin, secret, maxEntryBytes } = this.#opts;
    deliverHint(this.stats, this.#h, origin, () => {
      const m: unknown = JSON.parse(message);
      if (!Array.isArray(m) || typeof m[0] !== 'string') throw new Error('not [id, fields]');
      return decode(m[0], m[1], { secret, maxEntryBytes });
    });
  }
}
