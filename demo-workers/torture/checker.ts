import { fmt, type History, type ReadOp, type WriteOp } from './history.js';
import { groupOf } from './layout.js';
import type { GapFailure } from './nemesis.js';

export interface Regression { readonly id: number; readonly oldV: number; readonly newV: number }

export interface CheckInput {
  readonly history: History;
  readonly boundMs: number;
  /** Each row's version in Postgres once write-behind drained. */
  readonly finalVersions: ReadonlyMap<number, number>;
  /** Every UPDATE that moved a row's version backwards (the audit trigger). */
  readonly regressions: readonly Regression[];
  readonly gapFailures: readonly GapFailure[];
  /** Each row's version when the load started. */
  readonly baseline: ReadonlyMap<number, number>;
}

export interface StaleRead { readonly read: ReadOp; readonly write: WriteOp; readonly ageMs: number; readonly effective: number }
export interface LostWrite { readonly id: number; readonly expected: WriteOp; readonly got: number | undefined }

export interface Verdict {
  readonly reads: number;
  readonly writes: number;
  readonly staleBeyondBound: StaleRead[];
  readonly staleWithinBound: { count: number; p99Ms: number | null };
  readonly lostWrites: LostWrite[];
  readonly overtakenWrites: Regression[];
  /** Workers that served across a gap they did not count (violations of I2). */
  readonly undetectedGaps: GapFailure[];
  /** Workers that did not count a gap they had to (served nothing old: reported, not a violation). */
  readonly gapsNotCounted: GapFailure[];
  readonly crashes: History['crashes'];
  readonly ok: boolean;
}

const quantile = (sorted: readonly number[], q: number): number | null =>
  sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;

/**
 * When an acknowledged write must be visible everywhere, at the latest, minus the bound. A write
 * made outside the app reaches the bus only through the sidecar: while the sidecar is down (or
 * Redis restarts, or Postgres refuses its logins or answers late), the outbox holds it, so its clock starts when
 * the sidecar can relay again.
 */
function effectiveTime(w: WriteOp, h: History): number {
  if (w.how !== 'outside') return w.end;
  let t = w.end;
  const outages = [...h.sidecarDown, ...h.faults.filter((f) => (f.fault.startsWith('redis-') || f.fault === 'pg-refuse' || f.fault === 'pg-jitter') && f.skipped === undefined).map((f) => [f.start, f.end] as [number, number])];
  for (const [down, up] of outages) if (down <= t + 1_000 && up >= w.start) t = Math.max(t, up + 1_000);
  return t;
}

/** Write-behind rows acknowledged before a redis-wipe were lost by design (no AOF left): not required. */
export function requiredWrites(h: History): WriteOp[] {
  const wipes = h.faults.filter((f) => f.fault === 'redis-wipe' && f.skipped === undefined).map((f) => f.end);
  const lastWipe = wipes.length === 0 ? -Infinity : Math.max(...wipes);
  return h.writes.filter((w) => w.acked && !(w.how === 'write-behind' && w.start < lastWipe));
}

export function check(i: CheckInput): Verdict {
  const h = i.history;
  const acked = requiredWrites(h);
  // Per row: acknowledged writes by version ascending, with the earliest effective time among versions ≥ each.
  const byId = new Map<number, { w: WriteOp[]; eff: number[]; earliestFrom: number[]; who: number[] }>();
  for (const w of acked) {
    let e = byId.get(w.id);
    if (e === undefined) byId.set(w.id, (e = { w: [], eff: [], earliestFrom: [], who: [] }));
    e.w.push(w);
  }
  for (const e of byId.values()) {
    e.w.sort((a, b) => a.v - b.v);
    e.eff = e.w.map((w) => effectiveTime(w, h));
    e.earliestFrom = new Array<number>(e.w.length);
    e.who = new Array<number>(e.w.length);
    let best = Infinity, who = -1;
    for (let k = e.w.length - 1; k >= 0; k--) {
      if (e.eff[k]! < best) { best = e.eff[k]!; who = k; }
      e.earliestFrom[k] = best;
      e.who[k] = who;
    }
  }
  const ages: number[] = [];
  const beyond: StaleRead[] = [];
  for (const r of h.reads) {
    const e = byId.get(r.id);
    if (e === undefined) continue;
    let lo = 0, hi = e.w.length; // first acknowledged version > r.v
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (e.w[mid]!.v <= r.v) lo = mid + 1;
      else hi = mid;
    }
    if (lo >= e.w.length) continue;
    const t = e.earliestFrom[lo]!;
    if (t >= r.start) continue;
    const age = r.start - t;
    if (age > i.boundMs) beyond.push({ read: r, write: e.w[e.who[lo]!]!, ageMs: age, effective: t });
    else ages.push(age);
  }
  ages.sort((a, b) => a - b);

  const lost: LostWrite[] = [];
  for (const [id, e] of byId) {
    const last = e.w[e.w.length - 1]!;
    const got = i.finalVersions.get(id);
    if (got === undefined || got < last.v) lost.push({ id, expected: last, got });
  }
  // A worker that did not count a gap violates I2 only if it kept serving across it: a local hit
  // after the fault on a row it had neither loaded nor written since (so the entry predates it).
  const undetected: GapFailure[] = [];
  for (const g of i.gapFailures) {
    const fresh = new Set<number>();
    let served = 0;
    const events = [
      ...h.reads.filter((r) => r.pid === g.pid && g.caches.includes(r.cache) && r.start > g.at).map((r) => ({ t: r.start, id: r.id, hit: r.hit })),
      ...h.writes.filter((w) => w.worker === g.slot && w.start > g.at).map((w) => ({ t: w.end, id: w.id, hit: false })),
    ].sort((a, b) => a.t - b.t);
    let first: number | undefined;
    for (const e of events) {
      if (!e.hit) fresh.add(e.id);
      else if (!fresh.has(e.id)) { served++; first ??= e.t; }
    }
    if (served > 0) undetected.push({ ...g, detail: `${g.detail}; served ${served} local hits of entries cached before it (first at ${fmt(first!)})` });
  }
  const verdict = {
    reads: h.reads.length, writes: acked.length,
    staleBeyondBound: beyond, staleWithinBound: { count: ages.length, p99Ms: quantile(ages, 0.99) },
    lostWrites: lost, overtakenWrites: [...i.regressions], undetectedGaps: undetected, gapsNotCounted: [...i.gapFailures], crashes: [...h.crashes],
  };
  return {
    ...verdict,
    ok: beyond.length === 0 && lost.length === 0 && verdict.overtakenWrites.length === 0 && verdict.undetectedGaps.length === 0 && verdict.crashes.length === 0,
  };
}

/** The shortest slice of history that shows a violation: the row's writes and reads, and every fault, between the write and the read. */
export function window(h: History, id: number | undefined, from: number, to: number): string[] {
  type Line = [number, string];
  const lines: Line[] = [];
  const inWin = (a: number, b: number): boolean => b >= from && a <= to;
  for (const f of h.faults) if (inWin(f.start, f.end)) lines.push([f.start, `  ${fmt(f.start)} FAULT ${f.fault} ${f.detail}${f.skipped ? ` (skipped: ${f.skipped})` : ''} until ${fmt(f.end)}`]);
  for (const c of h.crashes) if (inWin(c.at, c.at)) lines.push([c.at, `  ${fmt(c.at)} CRASH ${c.what}: ${c.detail.split('\n')[0]}`]);
  if (id !== undefined) {
    for (const w of h.writes) if (w.id === id && inWin(w.start, w.end)) lines.push([w.start, `  ${fmt(w.start)}…${fmt(w.end)} write ${w.how} row ${id} v${w.v} by ${w.worker < 0 ? 'outside' : `w${w.worker}`}${w.acked ? ' acked' : ' NOT acked'}`]);
    const reads = h.reads.filter((r) => r.id === id && inWin(r.start, r.end));
    for (const r of reads.slice(-25)) lines.push([r.start, `  ${fmt(r.start)}…${fmt(r.end)} read  row ${id} → v${r.v} by w${r.worker}${r.cache ? ` thread ${r.cache}` : ''} (pid ${r.pid})${r.hit ? ' hit' : ''}`]);
  }
  return lines.sort((a, b) => a[0] - b[0]).map((l) => l[1]);
}

/**
 * Caches that stopped serving: no local hit in the last `lastMs` of the load although they were
 * read at least 30 times meanwhile (safe, I3, but a reader that never recovers). Notes, not violations.
 */
export function wedged(h: History, loadEnd: number, lastMs = 10_000): string[] {
  const by = new Map<string, { reads: number; hits: number; slot: number }>();
  for (const r of h.reads) {
    if (r.start < loadEnd - lastMs) continue;
    const k = `${r.pid}/${r.cache}`;
    const e = by.get(k) ?? { reads: 0, hits: 0, slot: r.worker };
    e.reads++;
    if (r.hit) e.hits++;
    by.set(k, e);
  }
  const anyHits = [...by.values()].some((e) => e.hits > 0);
  return [...by].filter(([, e]) => anyHits && e.hits === 0 && e.reads >= 30).map(([k, e]) => {
    const [pid, cache] = k.split('/');
    return `note: w${e.slot} (pid ${pid}, cache ${cache === '0' ? 'main' : `thread ${cache}`}) served no local hit in the last ${lastMs / 1000} s of the load (${e.reads} reads): its reader may never have recovered`;
  });
}

/** Text report of every violation, each with its window of history. */
export function explain(v: Verdict, h: History, boundMs: number): string[] {
  const out: string[] = [];
  for (const s of v.staleBeyondBound.slice(0, 3)) {
    out.push(`STALE beyond ${boundMs} ms: w${s.read.worker} read row ${s.read.id} (${groupOf(s.read.id)}) at ${fmt(s.read.start)} → v${s.read.v}, but v${s.write.v} (${s.write.how}) was acknowledged at ${fmt(s.write.end)}${s.effective !== s.write.end ? ` (counted from ${fmt(s.effective)})` : ''}: ${Math.round(s.ageMs)} ms stale`);
    out.push(...window(h, s.read.id, Math.min(s.write.start, s.effective) - 200, s.read.end + 200));
  }
  if (v.staleBeyondBound.length > 3) out.push(`… and ${v.staleBeyondBound.length - 3} more stale reads beyond the bound`);
  for (const l of v.lostWrites.slice(0, 3)) {
    out.push(`LOST: row ${l.id} (${groupOf(l.id)}) ends at v${l.got ?? 'none'} in Postgres, but v${l.expected.v} (${l.expected.how}) was acknowledged at ${fmt(l.expected.end)}`);
    out.push(...window(h, l.id, l.expected.start - 1_000, l.expected.end + 2_000));
  }
  if (v.lostWrites.length > 3) out.push(`… and ${v.lostWrites.length - 3} more lost writes`);
  for (const r of v.overtakenWrites.slice(0, 5)) out.push(`OVERTAKEN: row ${r.id} went from v${r.oldV} back to v${r.newV} in Postgres`);
  for (const g of v.undetectedGaps.slice(0, 5)) {
    out.push(`UNDETECTED GAP: w${g.slot} (pid ${g.pid}) after ${g.why} at ${fmt(g.at)}: ${g.detail}`);
    out.push(...window(h, undefined, g.at - 3_000, g.at + 1_000));
  }
  for (const g of v.gapsNotCounted.filter((x) => !v.undetectedGaps.some((u) => u.pid === x.pid && u.at === x.at)).slice(0, 5)) {
    const after = h.reads.filter((r) => r.pid === g.pid && g.caches.includes(r.cache) && r.start > g.at);
    out.push(`note: w${g.slot} (pid ${g.pid}, cache ${g.caches.map((k) => (k === 0 ? 'main' : `thread ${k}`)).join('+')}) counted no gap after ${g.why} at ${fmt(g.at)}, but served no entry older than it (${after.filter((r) => r.hit).length} hits in ${after.length} reads after it)`);
  }
  for (const c of v.crashes) {
    out.push(`CRASH: ${c.what} at ${fmt(c.at)}: ${c.detail}`);
    out.push(...window(h, undefined, c.at - 3_000, c.at + 200));
  }
  return out;
}
