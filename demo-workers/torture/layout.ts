/**
 * How the torture's one table is split between the write paths. Each row is written through one
 * path only (write-behind versions are clocks, write-through versions are +1: mixing them on
 * one row is documented as unsupported), and read the way that path caches it.
 */
export const GROUPS = ['wb', 'plain', 'tags', 'deps', 'entity'] as const;
export type Group = (typeof GROUPS)[number];
export const IDS_PER_GROUP = 8;
export const ROWS = GROUPS.length * IDS_PER_GROUP;

/** Group of row id (1 … ROWS). */
export const groupOf = (id: number): Group => GROUPS[Math.floor((id - 1) / IDS_PER_GROUP)]!;

/** Rows an outside writer (plain SQL + trigger → outbox → sidecar) may change: cached under `product:<id>`. */
export const outsideIds = (): number[] => Array.from({ length: ROWS }, (_, i) => i + 1)
  .filter((id) => ['plain', 'tags', 'deps'].includes(groupOf(id)));

/** The tag of a row of the `tags` group. */
export const tagOf = (id: number): string => `grp:${id % 3}`;

/** What the primary hands every torture worker. */
export interface TortureWorkerConfig {
  /** Redis of each worker slot: a StallProxy in front of the torture's redis-server. */
  readonly redisUrls: readonly string[];
  /** Carries application_name, so pg-terminate only hits this run's backends. */
  readonly databaseUrl: string;
  readonly schema: string;
  readonly prefix: string;
  readonly namespace: string;
  readonly maxStaleMs: number;
  /** A deliberately broken workload (tests that the checker catches it); '' for none. */
  readonly mutation: string;
}

export interface TortureReady { readonly port: number; readonly pid: number }
/** GET /r/<id> */
export interface ReadAnswer { readonly v: number; readonly h: 0 | 1 }
/** POST /w/<id>: the version written; pub 0 when the row changed but the invalidation was not published. */
export interface WriteAnswer { readonly v: number; readonly pub: 0 | 1; readonly how: string }
/** GET /stats */
/** GET /stats: the gaps each cache of the worker counted (main thread first, then its piscina threads). */
export interface WorkerStats {
  readonly pid: number; readonly gaps: readonly number[]; readonly servable: readonly boolean[];
  /**
   * The main cache's `cachebus_invalidation_lag_seconds` histogram (count, sum) and the raw
   * `received` events' lag (`now - t`, ms: negative when a publisher's clock is ahead).
   */
  readonly lag: { count: number; sumSeconds: number; nonFinite: number; minMs: number | null; maxMs: number | null };
}
