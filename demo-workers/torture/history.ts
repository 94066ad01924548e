import { performance } from 'node:perf_hooks';

let base = performance.now();
/** ms since the load began, on one monotonic clock (every event is stamped in the primary). */
export const now = (): number => performance.now() - base;
/** Time 0 of the history: the load starts now. */
export function resetClock(): void { base = performance.now(); }

/** `cache`: 0 the worker's main thread, 1 its piscina thread. */
export interface ReadOp { readonly worker: number; readonly pid: number; readonly cache: number; readonly id: number; readonly v: number; readonly hit: boolean; readonly start: number; readonly end: number }
/**
 * A write. `acked`: the path reported success (COMMIT returned and the invalidation was
 * published, or the write-behind row is durable in Redis). Unacknowledged writes may or may
 * not have happened: they never make a read stale and are never required in Postgres.
 */
export interface WriteOp {
  readonly worker: number; readonly id: number; readonly v: number; readonly how: string;
  readonly start: number; readonly end: number; readonly acked: boolean;
}
export interface FaultOp { readonly fault: string; readonly detail: string; readonly start: number; end: number; readonly skipped?: string }
export interface CrashOp { readonly what: string; readonly detail: string; readonly at: number }

/** Everything the checker needs, in the order it happened. */
export class History {
  readonly reads: ReadOp[] = [];
  readonly writes: WriteOp[] = [];
  readonly faults: FaultOp[] = [];
  readonly crashes: CrashOp[] = [];
  /** Intervals when the sidecar was down (the outbox cannot relay then): [down, up]. */
  readonly sidecarDown: [number, number][] = [];
  /** Requests that failed (worker gone, Postgres cut, …): counted, not checked. */
  failed = 0;

  read(op: ReadOp): void { this.reads.push(op); }
  write(op: WriteOp): void { this.writes.push(op); }
  crash(what: string, detail: string): void { this.crashes.push({ what, detail, at: now() }); }

  /** Starts a fault record; call `end` on the returned object when it healed. */
  fault(fault: string, detail: string, skipped?: string): FaultOp {
    const op: FaultOp = { fault, detail, start: now(), end: now(), ...(skipped ? { skipped } : {}) };
    this.faults.push(op);
    return op;
  }

  faultCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const f of this.faults) if (f.skipped === undefined) out[f.fault] = (out[f.fault] ?? 0) + 1;
    return out;
  }
}

export const fmt = (t: number): string => `${(t / 1000).toFixed(3)}s`;
