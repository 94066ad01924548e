import { EventEmitter } from 'node:events';
import { InvalidOptionError } from '../bus/errors.js';

/**
 * What a stale check concluded: `false` (fresh), `true` (stale, age unknown), or an object whose
 * `since` is the time (ms since the epoch) the source changed, which makes the verdict definite
 * and gives the age of the stale read.
 */
export type StaleVerdict = boolean | { readonly stale: boolean; readonly since?: number | undefined };

/**
 * How a sampled hit is checked against its source.
 * - `{ compare }`: the loader passed to `get` runs again and `compare(cached, fresh, key)` decides.
 * - `{ check }`: a check of its own, e.g. read only the entity's version column and compare it
 *   with the cached value's; `undefined` means "cannot tell" (counted as inconclusive).
 */
export type StaleCheck<V> =
  | { readonly compare: (cached: V, fresh: V, key: string) => StaleVerdict }
  | { readonly check: (key: string, cached: V) => StaleVerdict | undefined | Promise<StaleVerdict | undefined> };

/** The outcome of one sampled check. */
export type StaleResult = 'fresh' | 'stale' | 'inconclusive' | 'error' | 'skipped';

/** Counters of the sampler (plain numbers; metrics read them at scrape time). */
export interface StaleSamplerStats {
  /** Hits picked for a check (including skipped ones). */
  sampled: number;
  fresh: number;
  stale: number;
  /** The source differed but the entry was dropped meanwhile: maybe a write that raced the check. */
  inconclusive: number;
  /** The loader or the check threw; never propagated. */
  errors: number;
  /** Picked while `concurrency` checks were in flight: not checked. */
  skipped: number;
}

export interface StaleSamplerEvents {
  /** One finished check; `ageSeconds` is set for a stale read whose age is known. */
  checked: [info: { result: StaleResult; ageSeconds?: number }];
}

export interface StaleSamplerOptions<V> {
  /** Fraction of hits checked, in (0, 1]. */
  readonly rate: number;
  /** Most checks in flight. */
  readonly concurrency: number;
  readonly check?: StaleCheck<V> | undefined;
  /** The value the cache holds for the key now, without touching the policy (store.peek). */
  readonly current: (key: string) => V | undefined;
  /** Random number in [0, 1) (tests make it deterministic). @defaultValue Math.random */
  readonly random?: () => number;
}

/** Defaults of the sampler's cache options (see CacheOptions). */
export const kStaleSamplerDefaults = { staleSampleRate: 0, staleSampleConcurrency: 2 } as const;

/** Validates the sampler's cache options at once, naming the option. */
export function validateStaleSampler(o: { staleSampleRate?: number; staleSampleConcurrency?: number; staleCheck?: unknown }): void {
  const rate = o.staleSampleRate;
  if (rate !== undefined && (typeof rate !== 'number' || !(rate >= 0 && rate <= 1))) {
    throw new InvalidOptionError(`options.staleSampleRate must be a number from 0 to 1 (got ${String(rate)})`);
  }
  const c = o.staleSampleConcurrency;
  if (c !== undefined && (typeof c !== 'number' || !Number.isInteger(c) || c < 1)) {
    throw new InvalidOptionError(`options.staleSampleConcurrency must be a positive integer (got ${String(c)})`);
  }
  const chk = o.staleCheck as { compare?: unknown; check?: unknown } | undefined;
  if (chk !== undefined && (chk === null || typeof chk !== 'object' || (typeof chk.compare !== 'function' && typeof chk.check !== 'function'))) {
    throw new InvalidOptionError('options.staleCheck must be { compare(cached, fresh, key) } or { check(key, cached) }');
  }
}

/** Default comparison: the JSON of both values differs. */
export function jsonDiffers(cached: unknown, fresh: unknown): boolean {
  if (Object.is(cached, fresh)) return false;
  return JSON.stringify(cached) !== JSON.stringify(fresh);
}

/**
 * Checks a fraction of local hits against their source, off the hot path, to measure how often
 * a worker serves stale data in production and how old it is.
 *
 * The cache installs a sampling `get` only when the rate is above 0 (zero cost otherwise). On
 * that path a hit costs one decrement: `countdown` counts hits down to the next sampled one,
 * drawn from a geometric distribution so that on average `rate` of the hits are picked. A
 * picked hit is checked on a later turn of the event loop (one `setImmediate` for all picks of a
 * turn) with at most `concurrency` checks in flight; extra picks are skipped and counted.
 *
 * A hit is counted stale when the source differs AND either the verdict's `since` is before the
 * hit or the cache still holds the very value that was served once the check finished (so the
 * worker was, at that moment, serving a stale value). A difference with the entry gone meanwhile
 * is inconclusive: it may be a write that raced the check. A `since` after the hit means fresh.
 */
export class StaleSampler<V> extends EventEmitter<StaleSamplerEvents> {
  /** Hits left before the next sampled one. Decremented by the cache's sampling `get`. */
  countdown: number;
  readonly stats: StaleSamplerStats = { sampled: 0, fresh: 0, stale: 0, inconclusive: 0, errors: 0, skipped: 0 };
  readonly #o: StaleSamplerOptions<V>;
  readonly #random: () => number;
  readonly #logRest: number;
  #inFlight = 0;
  #queue: { key: string; cached: V; loader: () => unknown; hitAt: number }[] = [];
  #closed = false;

  constructor(options: StaleSamplerOptions<V>) {
    super();
    this.#o = options;
    this.#random = options.random ?? Math.random;
    this.#logRest = Math.log1p(-Math.min(options.rate, 1 - 1e-12));
    this.countdown = this.#draw();
  }

  /** Checks in flight. */
  get inFlight(): number { return this.#inFlight; }

  /** Called by the cache when `countdown` reached 0 on a hit: schedules a check of that hit. */
  sample(key: string, cached: V, loader: () => unknown): void {
    this.countdown = this.#draw();
    if (this.#closed) return;
    this.stats.sampled++;
    if (this.#inFlight >= this.#o.concurrency) {
      this.stats.skipped++;
      this.#report('skipped');
      return;
    }
    this.#inFlight++;
    this.#queue.push({ key, cached, loader, hitAt: Date.now() });
    if (this.#queue.length === 1) setImmediate(this.#drain);
  }

  /** Starts the checks picked since the last turn of the event loop (one setImmediate for all). */
  readonly #drain = (): void => {
    const picked = this.#queue;
    this.#queue = [];
    for (const p of picked) {
      void this.#check(p.key, p.cached, p.loader, p.hitAt).finally(() => { this.#inFlight--; });
    }
  };

  /** Stops checking; checks in flight finish but are not reported. */
  close(): void {
    this.#closed = true;
  }

  /** Hits until the next sampled one: 1 + a geometric draw with success probability `rate`. */
  #draw(): number {
    if (this.#o.rate >= 1) return 1;
    const u = this.#random();
    return 1 + Math.floor(Math.log(1 - u) / this.#logRest);
  }

  async #check(key: string, cached: V, loader: () => unknown, hitAt: number): Promise<void> {
    let verdict: StaleVerdict | undefined;
    try {
      const how = this.#o.check;
      if (how !== undefined && 'check' in how) {
        verdict = await how.check(key, cached);
      } else {
        const fresh = (await loader()) as V | undefined;
        if (fresh === undefined) verdict = undefined; // the source no longer has it: cannot compare
        else verdict = how !== undefined ? how.compare(cached, fresh, key) : jsonDiffers(cached, fresh);
      }
    } catch {
      this.stats.errors++;
      this.#report('error');
      return;
    }
    if (verdict === undefined) {
      this.stats.inconclusive++;
      this.#report('inconclusive');
      return;
    }
    const stale = typeof verdict === 'boolean' ? verdict : verdict.stale;
    const since = typeof verdict === 'object' ? verdict.since : undefined;
    if (!stale || (since !== undefined && since > hitAt)) {
      this.stats.fresh++;
      this.#report('fresh');
    } else if (since !== undefined || this.#o.current(key) === cached) {
      this.stats.stale++;
      this.#report('stale', since !== undefined ? Math.max(0, hitAt - since) / 1000 : undefined);
    } else {
      this.stats.inconclusive++;
      this.#report('inconclusive');
    }
  }

  #report(result: StaleResult, ageSeconds?: number): void {
    if (this.#closed || this.listenerCount('checked') === 0) return;
    this.emit('checked', ageSeconds === undefined ? { result } : { result, ageSeconds });
  }
}
