import { performance } from 'node:perf_hooks';

// When a cache may serve its local entries: invariant I3 (bounded staleness) lives here. The
// proof is the send time of the last read that showed the reader caught up (never the time its
// reply was processed), so neither a blocked event loop nor a frozen process outlives it.

/** Reasons a cache holds off serving local entries (bits of the hold mask). */
export const kHoldClosed = 1;
export const kHoldSourceClosed = 2;
export const kHoldBacklog = 4;

export interface ServabilityHost {
  readonly maxStaleMs: number;
  /** A cache without a bus (redis: false) is always servable until closed. */
  readonly local: boolean;
  /** Receives the new deadline; the cache keeps a copy its hit path reads. */
  setUntil(until: number): void;
  /** The `servable` event, on a change only. */
  changed(servable: boolean, staleForMs: number): void;
  closed(): boolean;
}

/** The serving deadline of one cache, its holds and its watchdog. */
export class Servability {
  /**
   * performance.now() past which local entries are not served (I3): the proof plus maxStaleMs.
   * Infinity for a local-only cache; -Infinity while held (closed, relay hub closed,
   * unpublished invalidations pending).
   */
  #until = Infinity;
  #proofAt = performance.now();
  /** Reasons local entries are not served whatever the proof says. */
  #holds = 0;
  /** What the last `servable` event said (events only; serving never depends on it). */
  #said = true;
  #watchdog: NodeJS.Timeout | undefined;
  readonly #host: ServabilityHost;

  constructor(host: ServabilityHost) {
    this.#host = host;
  }

  isServable(): boolean {
    return this.#until === Infinity || performance.now() <= this.#until;
  }

  /** Starts proving: the deadline counts from now, and a watchdog emits `servable` changes. */
  start(): void {
    this.refresh();
    const every = Math.max(5, Math.min(1000, Math.floor(this.#host.maxStaleMs / 10)));
    this.#watchdog = setInterval(() => this.check(), every);
    this.#watchdog.unref();
  }

  stop(): void {
    clearInterval(this.#watchdog);
  }

  refresh(): void {
    this.#until = this.#holds !== 0 ? -Infinity : this.#proofAt + this.#host.maxStaleMs;
    this.#host.setUntil(this.#until);
  }

  hold(reason: number, on: boolean): void {
    this.#holds = on ? this.#holds | reason : this.#holds & ~reason;
    if (!this.#host.local || reason === kHoldClosed) this.refresh();
    this.check();
  }

  /** A read sent at `at` proved the source caught up. */
  caughtUp(at: number): void {
    if (at > this.#proofAt) this.#proofAt = at;
    if ((this.#holds & kHoldSourceClosed) !== 0 && at > Number.NEGATIVE_INFINITY) this.#holds &= ~kHoldSourceClosed; // a new proof: a source again
    this.refresh();
    if (!this.#said) this.check();
  }

  /** Emits the `servable` event on a change (metrics and logs; serving itself reads the deadline). */
  check(): void {
    const servable = !this.#host.closed() && this.isServable();
    if (servable !== this.#said) {
      this.#said = servable;
      this.#host.changed(servable, performance.now() - this.#proofAt);
    }
  }
}
