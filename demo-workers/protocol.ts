import type { CacheStats } from '../worker-runtime/index.js';
import type { ThreadCacheStats } from '../worker-runtime/piscina/index.js';

/** What the primary hands every HTTP worker (through startCluster's config) for one scenario. */
export interface WorkerConfig {
  /** Redis of the bus; null runs plain per-process caches (the `bus off` scenario). */
  readonly redisUrl: string | null;
  readonly databaseUrl: string;
  /** Schema holding `products`. */
  readonly schema: string;
  readonly prefix: string;
  readonly namespace: string;
  /** Bounded staleness of every cache (I3), derived from --bound-ms. */
  readonly maxStaleMs: number;
  readonly maxEntries: number;
  /** piscina threads per worker. */
  readonly threads: number;
  /** How the worker writes: a name in `writers.ts`. */
  readonly writer: string;
  /** Serve /metrics data through the metrics module (node:cluster aggregation). */
  readonly metrics: boolean;
}

/** What a worker passes to workerReady(). */
export interface ReadyInfo {
  readonly port: number;
  readonly pid: number;
}

/** GET /r/<id>?t=0|1 → the version served and whether it was a local hit. */
export interface ReadReply {
  readonly v: number;
  readonly h: 0 | 1;
}

/** POST /w/<id> → the version committed, when the commit returned (ms, wall clock), and whether the invalidation was published. */
export interface WriteReply {
  readonly v: number;
  readonly at: number;
  readonly pub: 0 | 1;
}

/** GET /stats → the worker's caches, and every invalidation lag sample (ms) since it started. */
export interface StatsReply {
  readonly main: CacheStats;
  readonly threads: readonly ThreadCacheStats[];
  readonly lag: number[];
  readonly cacheErrors: number;
}

/** GET /live?from=N → lag samples (ms) from index N, the next index, and gap / clear counts of all the worker's caches. */
export interface LiveReply {
  readonly lag: number[];
  readonly next: number;
  readonly gaps: Record<string, number>;
  readonly clears: Record<string, number>;
}

/**
 * The cached value of a product: `{ v }` from the demo's loader, or the whole row (with
 * `version`, a decimal string) when write-behind stored it.
 */
export interface Product {
  readonly v?: number;
  readonly version?: string | number;
}

/** The version a cached product value carries (-1: none). */
export const versionOf = (p: Product | undefined): number =>
  p === undefined ? -1 : p.v ?? (p.version === undefined ? -1 : Number(p.version));

export const productKey = (id: number): string => `product:${id}`;
/** Quoted, schema-qualified name of the demo's products table. */
export const productsTable = (schema: string): string => `"${schema}".products`;
