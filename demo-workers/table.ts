import type { ScenarioResult } from './results.js';

const n = (x: number): string => x.toLocaleString('en-US');
const ms = (x: number | null): string => (x === null ? '-' : x >= 100 ? String(Math.round(x)) : String(x));
const pair = (a: number | null, b: number | null): string => (a === null && b === null ? '-' : `${ms(a)} / ${ms(b)}`);

function gapsNote(r: ScenarioResult): string[] {
  const entries = Object.entries(r.gaps);
  if (entries.length === 0) return [];
  return [`gaps: ${entries.map(([c, k]) => `${c} ${k}`).join(', ')}`];
}

/** The results as an aligned text table, with a notes column and a verdict line. */
export function renderTable(results: readonly ScenarioResult[], boundMs: number): string {
  const head = ['scenario', 'reads', 'stale', `stale >${boundMs}ms`, 'staleness p50/p99 ms', 'lag p50/p99 ms', 'hit ratio', 'writes/s', 'notes'];
  const rows = results.map((r) => r.skipped !== undefined
    ? [r.name, '-', '-', '-', '-', '-', '-', '-', `skipped: ${r.skipped}`]
    : [
      r.name, n(r.reads), n(r.staleReads), n(r.staleBeyondBound), pair(r.stalenessP50Ms, r.stalenessP99Ms),
      pair(r.lagP50Ms, r.lagP99Ms), `${(r.hitRatio * 100).toFixed(1)} %`, n(r.writesPerSec),
      [...(r.ok || r.interrupted ? [] : ['FAIL']), ...r.notes, ...gapsNote(r), ...(r.unpublishedWrites ? [`${r.unpublishedWrites} publishes failed`] : [])].join('; '),
    ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** One or two sentences saying what the table shows. */
export function verdict(results: readonly ScenarioResult[], boundMs: number): string {
  const ran = results.filter((r) => r.skipped === undefined && !r.interrupted);
  const off = ran.find((r) => r.expect === 'stale');
  const bounded = ran.filter((r) => r.expect === 'bounded');
  const out: string[] = [];
  if (off) {
    out.push(off.ok
      ? `${off.name}: ${n(off.staleReads)} of ${n(off.reads)} reads were stale (${((off.staleReads / Math.max(1, off.reads)) * 100).toFixed(0)} %), some by ${ms(off.stalenessMaxMs)} ms — and they never heal.`
      : `${off.name}: no stale read was observed (run longer or with more writes to see the problem).`);
  }
  if (bounded.length > 0) {
    const bad = bounded.filter((r) => !r.ok);
    out.push(bad.length === 0
      ? `${bounded.map((r) => r.name).join(', ')}: zero stale reads older than ${boundMs} ms.`
      : `FAILED: ${bad.map((r) => `${r.name} (${r.staleBeyondBound > 0 ? `${n(r.staleBeyondBound)} stale reads older than ${boundMs} ms` : r.reads === 0 ? 'no reads' : 'a check failed, see notes'})`).join(', ')}.`);
  }
  return out.join('\n');
}
