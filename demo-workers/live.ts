import type { ScenarioResult } from './results.js';

/** One point of every chart: the second of load that ended at `t` (s since the demo started). */
export interface Sample {
  readonly t: number;
  /** Index of the scenario (in `LiveState.scenarios`) the sample belongs to. */
  readonly s: number;
  /** Stale reads seen in this second, per second, and those older than the bound. */
  readonly stale: number;
  readonly beyond: number;
  /** Age of this second's stale reads, p99, ms (null: none). */
  readonly ageP99: number | null;
  /** Invalidation lag of this second's samples, ms (null: none, or no bus). */
  readonly lagP50: number | null;
  readonly lagP99: number | null;
  /** Hits / reads in this second (null: no read). */
  readonly hitRatio: number | null;
  readonly reads: number;
  readonly writes: number;
}

/** A chaos step (`chaos`) or what the caches saw (`gap`, `clear`), drawn as a vertical line. */
export interface Marker {
  readonly t: number;
  readonly s: number;
  readonly kind: 'chaos' | 'gap' | 'clear';
  readonly label: string;
}

/** Where the demo is. */
export interface LiveStatus {
  /** `stopped`: the demo ended before its last scenario (an error; the terminal says which). */
  readonly phase: 'starting' | 'setup' | 'load' | 'check' | 'done' | 'stopped';
  /** Index of the scenario in hand (-1: none yet). */
  readonly s: number;
  /** When its load started / ends (ms, wall clock), during `load`. */
  readonly loadStart?: number;
  readonly loadEnd?: number;
}

/** Everything the page shows; the report embeds it whole. */
export interface LiveState {
  /** When the demo started (ms, wall clock): `t` of samples and markers counts from here. */
  readonly startedAt: number;
  readonly boundMs: number;
  readonly durationMs: number;
  /** Names of the scenarios this run plays, in order. */
  readonly scenarios: readonly string[];
  readonly caches: string;
  samples: Sample[];
  markers: Marker[];
  status: LiveStatus;
  /** Rows so far (the final table once `status.phase` is `done`). */
  results: ScenarioResult[];
  verdict: string;
}

/** A change: new samples and markers, and the status (and results) now. */
export interface LiveUpdate {
  readonly now: number;
  readonly samples: readonly Sample[];
  readonly markers: readonly Marker[];
  readonly status: LiveStatus;
  readonly results?: readonly ScenarioResult[];
  readonly verdict?: string;
}

/** An update, or null: the demo is closing its page server (end the stream). */
type Listener = (u: LiveUpdate | null) => void;

/**
 * The demo's live record: the sampler adds a sample a second, scenarios add markers, the run
 * moves the status. Listeners (the page's event streams) get every change, batched: at most one
 * update per `flushMs`, so a burst of markers is one message.
 */
export class LiveBoard {
  readonly state: LiveState;
  readonly #listeners = new Set<Listener>();
  #pendingSamples: Sample[] = [];
  #pendingMarkers: Marker[] = [];
  #resultsChanged = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(init: { boundMs: number; durationMs: number; scenarios: readonly string[]; caches: string }, readonly flushMs = 200) {
    this.state = {
      startedAt: Date.now(), ...init, samples: [], markers: [], status: { phase: 'starting', s: -1 }, results: [], verdict: '',
    };
  }

  /** Seconds since the demo started, to 0.1 s. */
  t(at = Date.now()): number {
    return Math.round((at - this.state.startedAt) / 100) / 10;
  }

  status(status: LiveStatus): void {
    this.state.status = status;
    this.#schedule();
  }

  sample(s: Sample): void {
    this.state.samples.push(s);
    this.#pendingSamples.push(s);
    this.#schedule();
  }

  mark(kind: Marker['kind'], label: string, at = Date.now()): void {
    const m: Marker = { t: this.t(at), s: this.state.status.s, kind, label };
    this.state.markers.push(m);
    this.#pendingMarkers.push(m);
    this.#schedule();
  }

  result(r: ScenarioResult): void {
    this.state.results.push(r);
    this.#resultsChanged = true;
    this.#schedule();
  }

  done(verdict: string): void {
    this.state.verdict = verdict;
    this.state.status = { phase: 'done', s: this.state.status.s };
    this.#resultsChanged = true;
    this.flush();
  }

  /** Calls `fn` with every change from now on; returns the unsubscribe. */
  subscribe(fn: Listener): () => void {
    this.#listeners.add(fn);
    return () => { this.#listeners.delete(fn); };
  }

  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const u: LiveUpdate = {
      now: Date.now(), samples: this.#pendingSamples, markers: this.#pendingMarkers, status: this.state.status,
      ...(this.#resultsChanged ? { results: this.state.results, verdict: this.state.verdict } : {}),
    };
    this.#pendingSamples = [];
    this.#pendingMarkers = [];
    this.#resultsChanged = false;
    for (const fn of this.#listeners) {
      try { fn(u); } catch { /* a closed stream: its own close handler unsubscribes */ }
    }
  }

  /** Sends what is pending, then tells every listener the stream ends. */
  close(): void {
    if (this.state.status.phase !== 'done') this.state.status = { phase: 'stopped', s: this.state.status.s };
    this.flush();
    for (const fn of this.#listeners) {
      try { fn(null); } catch { /* already closed */ }
    }
    this.#listeners.clear();
  }

  #schedule(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => this.flush(), this.flushMs);
    this.#timer.unref();
  }
}
