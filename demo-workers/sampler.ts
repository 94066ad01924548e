import type { DriverCounts } from './driver.js';
import type { LiveBoard } from './live.js';
import type { LiveReply } from './protocol.js';
import { quantile, type Truth } from './truth.js';

export interface SamplerOptions {
  readonly board: LiveBoard;
  /** Index of the scenario on the board. */
  readonly s: number;
  readonly counts: DriverCounts;
  readonly truth: Truth;
  /** HTTP ports of the workers now. */
  readonly ports: () => readonly (number | undefined)[];
  /** Whether the caches use the bus (else no lag is shown). */
  readonly bus: boolean;
  /** @defaultValue 1_000 */
  readonly everyMs?: number;
}

async function getLive(port: number, from: number): Promise<LiveReply | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/live?from=${from}`, { signal: AbortSignal.timeout(800) });
    return res.ok ? (await res.json()) as LiveReply : undefined;
  } catch {
    return undefined; // stopped (SIGSTOP), restarting: its lag comes with the next answer
  }
}

const round1 = (x: number | null): number | null => (x === null ? null : Math.round(x * 10) / 10);
const sorted = (xs: number[]): number[] => xs.sort((a, b) => a - b);

/**
 * Samples a running scenario once a second onto the board: the driver's counts, the truth's live
 * stale reads, and from every worker its new lag samples and its gap / clear counts (an increase
 * is a marker). `loadOver()` takes a last sample; markers go on until `stop()` (caches may
 * see a gap only once their reader is back, after the load).
 */
export function startSampler(o: SamplerOptions): { loadOver(): Promise<void>; stop(): Promise<void> } {
  const every = o.everyMs ?? 1_000;
  const cursor = new Map<number, number>(); // port → next lag index
  const seen = new Map<number, { gaps: Record<string, number>; clears: Record<string, number> }>();
  let last = { at: Date.now(), reads: o.counts.reads, hits: o.counts.hits, writes: o.counts.writes, stale: o.truth.liveStale, beyond: o.truth.liveBeyond };
  o.truth.drainLiveAges();
  let busy: Promise<void> | undefined;
  let loading = true;

  const tick = async (): Promise<void> => {
    const ports = o.ports().filter((p): p is number => p !== undefined);
    const replies = await Promise.all(ports.map((p) => getLive(p, cursor.get(p) ?? 0)));
    const lag: number[] = [];
    const gaps = new Map<string, number>();
    const clears = new Map<string, number>();
    replies.forEach((r, i) => {
      if (r === undefined) return;
      const port = ports[i]!;
      cursor.set(port, r.next);
      lag.push(...r.lag);
      const before = seen.get(port);
      seen.set(port, { gaps: r.gaps, clears: r.clears });
      if (before === undefined) return; // first answer of this worker: its counts so far are its start
      for (const [c, n] of Object.entries(r.gaps)) if (n > (before.gaps[c] ?? 0)) gaps.set(c, (gaps.get(c) ?? 0) + n - (before.gaps[c] ?? 0));
      for (const [c, n] of Object.entries(r.clears)) {
        // local: a write dropping its own entry (every write); gap: already a gap marker; close: shutdown.
        if (c === 'remote' && n > (before.clears[c] ?? 0)) clears.set(c, (clears.get(c) ?? 0) + n - (before.clears[c] ?? 0));
      }
    });
    const now = Date.now();
    for (const [cause, n] of gaps) o.board.mark('gap', `gap: ${cause} ×${n}`, now);
    for (const [cause, n] of clears) o.board.mark('clear', `clear: ${cause} ×${n}`, now);
    if (!loading) return;
    const secs = Math.max(1, now - last.at) / 1000;
    const { counts, truth } = o;
    const ages = sorted(truth.drainLiveAges());
    const reads = counts.reads - last.reads;
    sorted(lag);
    o.board.sample({
      t: o.board.t(now), s: o.s,
      stale: Math.round((truth.liveStale - last.stale) / secs), beyond: Math.round((truth.liveBeyond - last.beyond) / secs),
      ageP99: round1(quantile(ages, 0.99)),
      lagP50: o.bus ? round1(quantile(lag, 0.5)) : null, lagP99: o.bus ? round1(quantile(lag, 0.99)) : null,
      hitRatio: reads > 0 ? Math.round(((counts.hits - last.hits) / reads) * 1000) / 1000 : null,
      reads: Math.round(reads / secs), writes: Math.round((counts.writes - last.writes) / secs),
    });
    last = { at: now, reads: counts.reads, hits: counts.hits, writes: counts.writes, stale: truth.liveStale, beyond: truth.liveBeyond };
  };

  const timer = setInterval(() => {
    if (busy !== undefined) return; // a worker is slow to answer: skip this beat, the next covers it
    busy = tick().catch(() => undefined).finally(() => { busy = undefined; });
  }, every);
  timer.unref();

  return {
    async loadOver() {
      await busy;
      if (loading && Date.now() - last.at > every / 4) await tick().catch(() => undefined);
      loading = false;
    },
    async stop() {
      clearInterval(timer);
      await busy;
      loading = false;
      await tick().catch(() => undefined);
    },
  };
}
