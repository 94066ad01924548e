import type { BadEntryReason } from '../bus/errors.js';
import type { GapCause, ReaderStatus } from '../bus/reader.js';

/** Why entries left the local cache. */
export type DropReason = 'invalidate' | 'tag' | 'set' | 'clear' | 'gap' | 'evict' | 'expire' | 'transaction' | 'dependency';
export type ClearCause = 'local' | 'remote' | 'gap' | 'close';

/**
 * Every event a cache emits, with its payload. Metrics, logs and tests consume this one map.
 * Hot-path events (`hit`, `miss`) are emitted only while someone listens.
 */
export interface CacheEvents {
  hit: [key: string];
  miss: [key: string];
  load: [info: { key: string; durationMs: number; stored: boolean; error?: unknown }];
  drop: [info: { key: string; reason: DropReason }];
  published: [info: { keys: number; tags: number; clear: boolean; ids: string[] }];
  received: [info: { id: string; origin: string; keys: number; tags: number; clear: boolean; lagMs: number; dropped: number }];
  gap: [info: { cause: GapCause; detail: string }];
  clear: [info: { cause: ClearCause; entries: number }];
  badEntry: [info: { reason: BadEntryReason; id: string; message: string }];
  status: [info: { status: ReaderStatus; previous: ReaderStatus }];
  /** Serving switched off (reader not caught up for maxStaleMs) or back on. */
  servable: [info: { servable: boolean; staleForMs: number }];
  error: [err: unknown];
}

export type CacheEventName = keyof CacheEvents;

/** Counters kept on the cache itself (plain numbers; metrics read them at scrape time). */
export interface CacheStats {
  hits: number;
  misses: number;
  loads: number;
  loadErrors: number;
  /** Loads whose result was returned but not stored because an invalidation overtook them (I1). */
  loadsDiscarded: number;
  /** Loads that took longer than their timeout (rejected with LoadTimeoutError; counted in loadErrors too). */
  loadTimeouts: number;
  evictions: { evict: number; expire: number };
  invalidationsPublished: number;
  entriesPublished: number;
  publishErrors: number;
  entriesReceived: number;
  keysDropped: number;
  badEntries: Record<BadEntryReason, number>;
  gaps: Record<GapCause, number>;
  clears: Record<ClearCause, number>;
  /** Gets that bypassed local entries because the bus was not provably current (I3). */
  unservableReads: number;
}

export function newStats(): CacheStats {
  return {
    hits: 0, misses: 0, loads: 0, loadErrors: 0, loadsDiscarded: 0, loadTimeouts: 0,
    evictions: { evict: 0, expire: 0 },
    invalidationsPublished: 0, entriesPublished: 0, publishErrors: 0,
    entriesReceived: 0, keysDropped: 0,
    badEntries: { malformed: 0, version: 0, oversized: 0, signature: 0 },
    gaps: { trimmed: 0, missing: 0, reset: 0, restart: 0 },
    clears: { local: 0, remote: 0, gap: 0, close: 0 },
    unservableReads: 0,
  };
}
