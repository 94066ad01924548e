import type { BadEntryReason } from './errors.js';
import type { GapCause } from './stream-position.js';
import type { DecodedEntry } from './wire.js';

// What a stream reader (bus/reader.ts) is told and whom it tells: its options and handlers.

export type ReaderStatus = 'connecting' | 'ready' | 'reconnecting' | 'closed';

export interface ReaderHandlers {
  /** A decoded entry from another origin. Must not throw; exceptions are reported as errors. */
  onEntry(entry: DecodedEntry): void;
  /** Called (synchronously, before any later entry is handed over) when a gap is detected. */
  onGap(cause: GapCause, detail: string): void;
  onBadEntry(reason: BadEntryReason, id: string, message: string): void;
  onStatus(status: ReaderStatus, previous: ReaderStatus): void;
  /** The reader has read everything that was in the stream at `at` (performance.now()). */
  onCaughtUp(at: number): void;
  onError(err: unknown): void;
}

export interface ReaderOptions {
  readonly stream: string;
  readonly origin: string;
  readonly blockMs: number;
  readonly count: number;
  readonly secret?: string | Buffer | undefined;
  readonly maxEntryBytes: number;
  /**
   * A read is a proving read (the stream-info script first) once the last proof is this old (ms);
   * the reads in between are plain XREADs. 0: every read proves.
   */
  readonly proofEveryMs: number;
  /**
   * After a read that returned entries (and not a full batch), wait this long (ms) before the
   * next read, so that under traffic one read takes many entries. For readers whose keys are
   * dropped first by wake-up hints (options `wake: 'pubsub'` and `'host'`): the stream then only confirms,
   * and a lost hint's drop comes at most this much later. 0 (the default): read again at once.
   * The pause is taken only when `hinted` says the newest entry read is covered by hints, or it
   * is this process's own: entries that come with no hint (the outbox relay, foreign
   * publishers) while no hints flow are read as soon as they arrive.
   */
  readonly readPauseMs?: number | undefined;
  /** Whether entry `id` is covered by hints: its hint arrived, or hints are flowing (options `wake: 'pubsub'`, `'host'`). */
  readonly hinted?: ((id: string) => boolean) | undefined;
  /**
   * Whether wake-up hints are flowing (one came lately): keys then drop on the hints, and the
   * reader sends its proving reads, one per `proofEveryMs`, each taking every entry since the
   * last, and a plain read only when `kAnnouncedReadAt` entries were announced since the last
   * read (`StreamReader.announce()`). No read waits in Redis to be woken by each XADD beside its hint.
   */
  readonly hintsFlowing?: (() => boolean) | undefined;
}

/** The longest the reader applies entries of one reply before it lets the event loop turn (ms). */
export const kApplySliceMs = 1;

/**
 * While hints flow, the reader reads the stream once this many entries were announced since its
 * last read (`announce()`: a hint arrived, or this cache published), rather than only with its
 * next proving read: under heavy traffic a proof interval's worth of entries (1,250 at 5,000/s)
 * applied at once holds the event loop for several ms, and the hints that arrive meanwhile wait
 * (issue 15, the p99 at 5,000/s). Under light traffic it never triggers.
 */
export const kAnnouncedReadAt = 64;

/** The default proof interval for a reader that blocks `blockMs`: blockMs / 4, at most 250 ms. */
export function defaultProofEveryMs(blockMs: number): number {
  return Math.max(1, Math.min(250, Math.floor(blockMs / 4)));
}
