import type { DemoOptions } from './args.js';
import type { ExternalWriter } from './driver.js';
import type { Infra } from './infra.js';
import type { StatsReply } from './protocol.js';

/** What a scenario can see and change while it is set up and run (in the primary). */
export interface ScenarioContext {
  readonly options: DemoOptions;
  readonly infra: Infra;
  /** Redis the workers' caches use in this scenario; `setup` may point it elsewhere. */
  redisUrl: string;
  /** Bus namespace of the demo's caches (unique per run). */
  readonly namespace: string;
  /** Short remarks printed in the row's notes (what chaos did, why something was skipped…). */
  readonly notes: string[];
}

/** The load phase, as `during` sees it. */
export interface RunInfo {
  readonly durationMs: number;
  /** Aborted when the load ends (or the demo is interrupted). */
  readonly signal: AbortSignal;
  /** Resolves when `fraction` (0…1) of the load phase has passed, or at once when aborted. */
  at(fraction: number): Promise<void>;
  /** PIDs of the running HTTP workers (for faults such as SIGSTOP). */
  workerPids(): number[];
}

/**
 * One row of the demo. Add a scenario by writing one file in scenarios/ and listing it in
 * scenarios/index.ts.
 */
export interface Scenario {
  /** Name shown in the table and the JSON, e.g. `bus on`; `--scenario` also accepts `bus-on`. */
  readonly name: string;
  /** One line saying what the row shows. */
  readonly summary: string;
  /** Whether the caches use the bus (false: plain per-process LRU caches). */
  readonly bus: boolean;
  /** `stale`: the row demonstrates the problem (stale reads > 0); `bounded`: zero stale reads older than the bound. */
  readonly expect: 'stale' | 'bounded';
  /** How workers write (a name in writers.ts). @defaultValue `'sql'` */
  readonly writer?: string;
  /** When present, the reason this scenario cannot run here; the row is printed as skipped. */
  unavailable?(ctx: ScenarioContext): string | undefined;
  /** Before the workers start. */
  setup?(ctx: ScenarioContext): Promise<void>;
  /** When set, writes go straight to PostgreSQL through this instead of through a worker. */
  externalWriter?(ctx: ScenarioContext): ExternalWriter;
  /** Runs alongside the load (faults, …). */
  during?(ctx: ScenarioContext, run: RunInfo): Promise<void>;
  /**
   * After the load, before the workers stop: checks of its own. `latest`: the newest version
   * written per product; `workers()`: the workers' cache stats now. Resolving false fails the
   * row; say why in `ctx.notes`.
   */
  verify?(ctx: ScenarioContext, latest: ReadonlyMap<number, number>, workers: () => Promise<StatsReply[]>): Promise<boolean>;
    /** After the workers stopped; also on interruption. */
  teardown?(ctx: ScenarioContext): Promise<void>;
}
