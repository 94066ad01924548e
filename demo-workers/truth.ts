/**
 * The truth checker. The load driver records every committed (or, for write-behind,
 * acknowledged) version of every product with the time its commit returned, and every read with
 * the time it started. A read that returned version v is stale when some newer version of that
 * product had committed before the read started; its age is read start − the earliest such
 * commit. Commit times are taken after COMMIT returned, so a read counted stale is certainly
 * stale (the age is, if anything, a little short). Versions only need to increase (SQL
 * `version + 1`, or write-behind's clock-based versions). The final count is exact: it is made
 * once every write has answered.
 */
export interface StaleSummary {
  readonly reads: number;
  readonly staleReads: number;
  readonly staleBeyondBound: number;
  /** Ages of the stale reads, ms, ascending. */
  readonly ages: readonly number[];
}

interface Commits {
  readonly versions: number[];
  readonly times: number[];
}

export class Truth {
  readonly #commits = new Map<number, Commits>();
  readonly #rId: number[] = [];
  readonly #rV: number[] = [];
  readonly #rStart: number[] = [];
  #liveStale = 0;
  #liveBeyond = 0;
  #liveAges: number[] = [];
  readonly #boundMs: number;

  /**
   * `base`: each product's version in PostgreSQL when the scenario started, at time `since`.
   * `boundMs`: the live count of stale reads beyond it (the final count takes its own).
   */
  constructor(base: ReadonlyMap<number, number>, since: number, boundMs = Infinity) {
    this.#boundMs = boundMs;
    for (const [id, v] of base) this.#commits.set(id, { versions: [v], times: [since] });
  }

  get reads(): number { return this.#rId.length; }
  /** Stale reads seen so far with the commits known so far (the final count may be higher). */
  get liveStale(): number { return this.#liveStale; }
  /** Of those, the ones older than the bound (a lower bound of the final count). */
  get liveBeyond(): number { return this.#liveBeyond; }

  /** Ages (ms) of the stale reads seen live since the last call, unordered. */
  drainLiveAges(): number[] {
    const out = this.#liveAges;
    this.#liveAges = [];
    return out;
  }

  commit(id: number, version: number, at: number): void {
    let c = this.#commits.get(id);
    if (c === undefined) this.#commits.set(id, (c = { versions: [], times: [] }));
    c.versions.push(version);
    c.times.push(at);
  }

  read(id: number, version: number, start: number): void {
    this.#rId.push(id);
    this.#rV.push(version);
    this.#rStart.push(start);
    const c = this.#commits.get(id);
    if (c === undefined) return;
    // Age: from the earliest known newer commit (of the last 32) that was before the read.
    let earliest = Infinity;
    for (let i = c.versions.length - 1; i >= Math.max(0, c.versions.length - 32); i--) {
      if (c.versions[i]! > version && c.times[i]! < start && c.times[i]! < earliest) earliest = c.times[i]!;
    }
    if (earliest === Infinity) return;
    this.#liveStale++;
    const age = start - earliest;
    if (age > this.#boundMs) this.#liveBeyond++;
    if (this.#liveAges.length < 100_000) this.#liveAges.push(age);
  }

  /** The newest version recorded per product (the baseline included). */
  latest(): Map<number, number> {
    const out = new Map<number, number>();
    for (const [id, c] of this.#commits) out.set(id, Math.max(...c.versions));
    return out;
  }

  /** The exact count, once every write has answered. */
  finish(boundMs: number): StaleSummary {
    // Per product: versions ascending, and the earliest commit time among versions ≥ each one.
    const index = new Map<number, { versions: Float64Array; earliest: Float64Array }>();
    for (const [id, c] of this.#commits) {
      const order = c.versions.map((_, i) => i).sort((a, b) => c.versions[a]! - c.versions[b]!);
      const versions = Float64Array.from(order, (i) => c.versions[i]!);
      const earliest = new Float64Array(order.length + 1).fill(Infinity);
      for (let k = order.length - 1; k >= 0; k--) earliest[k] = Math.min(c.times[order[k]!]!, earliest[k + 1]!);
      index.set(id, { versions, earliest });
    }
    const ages: number[] = [];
    let beyond = 0;
    for (let i = 0; i < this.#rId.length; i++) {
      const p = index.get(this.#rId[i]!);
      if (p === undefined) continue;
      const v = this.#rV[i]!;
      let lo = 0, hi = p.versions.length; // first version > v
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (p.versions[mid]! <= v) lo = mid + 1;
        else hi = mid;
      }
      const t = p.earliest[lo]!;
      const start = this.#rStart[i]!;
      if (t < start) {
        const age = start - t;
        ages.push(age);
        if (age > boundMs) beyond++;
      }
    }
    ages.sort((a, b) => a - b);
    return { reads: this.#rId.length, staleReads: ages.length, staleBeyondBound: beyond, ages };
  }
}

/** The q-quantile (0…1) of ascending `sorted`, or null when empty. */
export function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}
