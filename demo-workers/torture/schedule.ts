import { Prng } from './prng.js';

/** Every fault the nemesis knows (docs/torture.md describes each one). */
export const FAULTS = [
  'kill-worker', // kill -9 of a cluster worker (startCluster forks it again)
  'kill-sidecar', // kill -9 of the sidecar, restarted after a pause
  'stop-worker', // SIGSTOP a worker, SIGCONT after a pause
  'block-loop', // a worker's event loop busy for a while
  'client-kill', // CLIENT KILL of random bus connections
  'stream-del', // DEL of the invalidation stream (the next XADD re-creates it)
  'stream-trim', // XTRIM MAXLEN 0: past every reader, including frozen ones
  'stream-xdel', // XDEL of the newest entries
  'redis-restart', // kill -9 of redis-server, restarted on the same port (AOF, fsync always)
  'redis-wipe', // kill -9 of redis-server, restarted empty (AOF deleted)
  'pg-terminate', // pg_terminate_backend of random backends of this run
  'pg-refuse', // Postgres refuses new connections for a few seconds (a proxy in front of it closes them)
  'stall-redis', // a silent network stall (a proxy that stops forwarding) between one worker and Redis
  'pg-jitter', // every request to Postgres delayed by its own random time: requests on two connections overtake each other
  'stop-hub', // SIGSTOP of the relay hub's process (the relayed worker keeps running), SIGCONT after a pause
  'clock-jump', // a worker's wall clock (Date.now: its publishes' t, its lag, BullMQ's timestamps) jumps ± minutes, then back
] as const;
export type Fault = (typeof FAULTS)[number];

/** Faults run when --faults is not given. redis-wipe loses write-behind data by design, so it is opt-in. */
export const DEFAULT_FAULTS: readonly Fault[] = FAULTS.filter((f) => f !== 'redis-wipe');

export interface ScheduledFault {
  /** ms after the load started. */
  readonly at: number;
  readonly fault: Fault;
  /** Worker slot (faults on a worker), or how many connections / entries / backends. */
  readonly target: number;
  /** How long the fault lasts (stop, block, sidecar down), ms. */
  readonly durationMs: number;
}

export function parseFaults(list: string | undefined): Fault[] {
  if (list === undefined || list === '' || list === 'default') return [...DEFAULT_FAULTS];
  if (list === 'all') return [...FAULTS];
  if (list === 'none') return [];
  const out: Fault[] = [];
  for (const name of list.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (!(FAULTS as readonly string[]).includes(name)) {
      throw new Error(`unknown fault "${name}" (known: ${FAULTS.join(', ')}, or all, default, none)`);
    }
    out.push(name as Fault);
  }
  return out;
}

/**
 * The nemesis schedule: a pure function of (seed, seconds, faults, workers). Faults start from
 * 1 s into the load, 0.4–2.5 s apart, and stop 2 s before its end (so the last ones heal
 * before the checker looks). Overlaps are intended: they are the combinations nobody scripts.
 */
export function makeSchedule(seed: number, seconds: number, faults: readonly Fault[], workers: number): ScheduledFault[] {
  const rng = new Prng(seed);
  const out: ScheduledFault[] = [];
  if (faults.length === 0) return out;
  const end = Math.max(0, seconds * 1000 - 2_000);
  for (let at = 1_000 + rng.int(0, 500); at < end; at += rng.int(400, 2_500)) {
    const fault = rng.pick(faults);
    const target = fault === 'client-kill' || fault === 'stream-xdel' || fault === 'pg-terminate' ? rng.int(1, 3) : rng.int(0, workers - 1);
    const durationMs = fault === 'stop-worker' ? rng.int(300, 3_000)
      : fault === 'block-loop' ? rng.int(200, 2_000)
        : fault === 'stall-redis' ? rng.int(300, 4_000)
          : fault === 'pg-refuse' ? rng.int(500, 4_000)
        : fault === 'kill-sidecar' ? rng.int(200, 2_000)
          : fault === 'stop-hub' ? rng.int(300, 3_000)
            : fault === 'pg-jitter' ? rng.int(1_000, 6_000)
            : fault === 'clock-jump' ? rng.int(500, 5_000)
          : 0;
    out.push({ at, fault, target, durationMs });
  }
  return out;
}

export function describe(f: ScheduledFault): string {
  const t = `+${(f.at / 1000).toFixed(2)}s`;
  const arg = f.fault.endsWith('worker') || f.fault === 'block-loop' || f.fault === 'stall-redis' || f.fault === 'clock-jump' ? ` w${f.target}`
    : f.fault === 'kill-sidecar' || f.fault === 'stop-hub' || f.fault === 'pg-jitter' || f.fault.startsWith('redis') ? '' : ` ×${f.target}`;
  return `${t} ${f.fault}${arg}${f.durationMs ? ` ${f.durationMs}ms` : ''}`;
}
