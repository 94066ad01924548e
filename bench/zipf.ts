/**
 * Zipf-distributed access traces: rank r (0-based) of n items is drawn with probability
 * proportional to 1 / (r + 1)^s. Sampled by inverse CDF (binary search over the cumulative
 * weights), seeded, so a trace is the same from run to run.
 */
import { rng } from './harness.js';

/** The cumulative, normalised weights of Zipf(s) over n items. */
export function zipfCdf(n: number, s: number): Float64Array {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let r = 0; r < n; r++) {
    sum += 1 / Math.pow(r + 1, s);
    cdf[r] = sum;
  }
  for (let r = 0; r < n; r++) cdf[r]! /= sum;
  return cdf;
}

/**
 * A trace of `length` item indices in [0, n), Zipf(s)-distributed. Ranks are shuffled onto
 * item indices (seeded), so the hottest items are not the first ones inserted.
 */
export function zipfTrace(n: number, s: number, length: number, seed = 1): Uint32Array {
  const cdf = zipfCdf(n, s);
  const next = rng(seed);
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }
  const out = new Uint32Array(length);
  for (let i = 0; i < length; i++) {
    const u = next();
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    out[i] = perm[lo]!;
  }
  return out;
}

/** A trace of `length` item indices in [0, n), uniformly distributed (seeded). */
export function uniformTrace(n: number, length: number, seed = 1): Uint32Array {
  const next = rng(seed);
  const out = new Uint32Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(next() * n);
  return out;
}
