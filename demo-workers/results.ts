import type { CacheStats } from '../worker-runtime/index.js';
import type { DriverCounts } from './driver.js';
import type { StatsReply } from './protocol.js';
import type { Scenario } from './scenario.js';
import { quantile, type StaleSummary } from './truth.js';

/** One row of the demo, as printed and as JSON. */
export interface ScenarioResult {
  readonly name: string;
  readonly summary: string;
  /** Set when the scenario did not run; says why. */
  readonly skipped?: string;
  readonly reads: number;
  readonly staleReads: number;
  readonly staleBeyondBound: number;
  readonly boundMs: number;
  readonly stalenessP50Ms: number | null;
  readonly stalenessP99Ms: number | null;
  readonly stalenessMaxMs: number | null;
  /** Invalidation lag (publish → applied in a cache), ms; null without a bus. */
  readonly lagP50Ms: number | null;
  readonly lagP99Ms: number | null;
  readonly hitRatio: number;
  readonly writes: number;
  readonly writesPerSec: number;
  readonly readsPerSec: number;
  readonly durationMs: number;
  /** Local caches (worker main threads + piscina threads). */
  readonly caches: number;
  /** Gaps detected by the caches' readers, by cause (each cleared a cache). */
  readonly gaps: Record<string, number>;
  readonly unpublishedWrites: number;
  readonly errors: number;
  readonly expect: 'stale' | 'bounded';
  /** bus off: stale reads > 0; every other scenario: zero stale reads beyond the bound (and its own checks passed). */
  readonly ok: boolean;
  readonly notes: readonly string[];
  /** The demo was interrupted (Ctrl-C) while this scenario ran: its figures cover a shorter run. */
  readonly interrupted?: boolean;
}

const round = (x: number | null, digits = 1): number | null => (x === null ? null : Math.round(x * 10 ** digits) / 10 ** digits);

function addGaps(into: Record<string, number>, s: CacheStats): void {
  for (const [cause, n] of Object.entries(s.gaps)) if (n > 0) into[cause] = (into[cause] ?? 0) + n;
}

export function summarize(
  scenario: Scenario, boundMs: number, elapsedMs: number, counts: DriverCounts, stale: StaleSummary,
  workers: readonly StatsReply[], notes: readonly string[], checksPassed = true,
): ScenarioResult {
  const lag = workers.flatMap((w) => w.lag).sort((a, b) => a - b);
  const gaps: Record<string, number> = {};
  let caches = 0;
  for (const w of workers) {
    addGaps(gaps, w.main);
    caches += 1 + w.threads.length;
    for (const t of w.threads) addGaps(gaps, t.stats);
  }
  const secs = Math.max(elapsedMs, 1) / 1000;
  const ok = checksPassed && (scenario.expect === 'stale' ? stale.staleReads > 0 : stale.reads > 0 && stale.staleBeyondBound === 0);
  return {
    name: scenario.name,
    summary: scenario.summary,
    reads: stale.reads,
    staleReads: stale.staleReads,
    staleBeyondBound: stale.staleBeyondBound,
    boundMs,
    stalenessP50Ms: round(quantile(stale.ages, 0.5)),
    stalenessP99Ms: round(quantile(stale.ages, 0.99)),
    stalenessMaxMs: round(quantile(stale.ages, 1)),
    lagP50Ms: scenario.bus ? round(quantile(lag, 0.5)) : null,
    lagP99Ms: scenario.bus ? round(quantile(lag, 0.99)) : null,
    hitRatio: counts.reads === 0 ? 0 : Math.round((counts.hits / counts.reads) * 1000) / 1000,
    writes: counts.writes,
    writesPerSec: Math.round(counts.writes / secs),
    readsPerSec: Math.round(counts.reads / secs),
    durationMs: Math.round(elapsedMs),
    caches,
    gaps,
    unpublishedWrites: counts.unpublished,
    errors: counts.errors,
    expect: scenario.expect,
    ok,
    notes,
  };
}

/** The row of a scenario that could not run here. */
export function skippedResult(scenario: Scenario, boundMs: number, reason: string): ScenarioResult {
  return {
    name: scenario.name, summary: scenario.summary, skipped: reason, reads: 0, staleReads: 0, staleBeyondBound: 0, boundMs,
    stalenessP50Ms: null, stalenessP99Ms: null, stalenessMaxMs: null, lagP50Ms: null, lagP99Ms: null, hitRatio: 0,
    writes: 0, writesPerSec: 0, readsPerSec: 0, durationMs: 0, caches: 0, gaps: {}, unpublishedWrites: 0, errors: 0,
    expect: scenario.expect, ok: true, notes: [`skipped: ${reason}`],
  };
}
