import { createHmac } from 'node:crypto';
import type { BadEntryReason } from '../errors.js';
import type { GapCause, ReaderStatus } from '../reader.js';
import type { DecodedEntry } from '../wire.js';

/**
 * The relay protocol: one reader per host (the hub) fans a namespace's stream out to the
 * caches of that host over node IPC (node:cluster workers, forked children) and
 * BroadcastChannel (worker threads, and caches in the hub's own process).
 *
 * Hub → caches, per namespace, numbered `seq` 1, 2, 3... by the hub `hub`. A cache takes the
 * first number it sees and then expects every next one: a jump (a lost message) or another
 * hub id (the hub restarted) is a gap, and the cache clears (invariant I2).
 * - `beat`:    the hub's reader was caught up with the stream at `at` (hostNow() ms): `at` is
 *              when the XREAD that proved it was SENT, never when its reply was processed (a
 *              reply can sit in a socket while the hub is frozen). The cache serves only while
 *              its last beat's `at` is younger than maxStaleMs (I3). `secret` names the hub's
 *              HMAC secret (secretId); a cache with another setting takes no proof from it.
 * - `entries`: decoded entries, in stream order (a cache skips those of its own origin).
 * - `gap`:     the hub's reader detected a gap; every cache clears.
 * - `bad`:     an entry the hub skipped (counted in every cache, as a direct reader would).
 * - `status`:  the hub's reader status; `closed` stops serving at once.
 * Caches → hub: `hello` (subscribe; sent again while no beat arrives) and `bye`. A hello names
 * the cache's secret (secretId); the hub refuses a cache whose setting differs from its own.
 * `refuse` answers a hello the hub cannot serve (to that cache only; not numbered); with code
 * `E_RELAY_DIRECT` it advises a cache in 'auto' mode to read Redis itself (few workers).
 */
export const RELAY_TAG = 'cachebus-relay' as const;
/** 2: hellos and beats name the secret (secretId); a cache takes advice to read directly only while opening. */
export const RELAY_VERSION = 2;

/**
 * Environment variable a hub sets in its process: the hub's pid. Children forked and threads
 * started afterwards inherit it, so caches with `relay: 'auto'` find the hub.
 */
export const RELAY_ENV = 'CACHEBUS_RELAY';

/** BroadcastChannel on which caches say hello to an in-process hub. */
export const HELLO_CHANNEL = 'cachebus:relay';

/** The subscription a message belongs to: prefix and namespace (no NUL in either). */
export function topicOf(prefix: string, namespace: string): string {
  return `${prefix}\u0000${namespace}`;
}

/** BroadcastChannel that carries one topic's stream messages. */
export function topicChannel(topic: string): string {
  return `cachebus:relay:${topic.replace('\u0000', ':')}`;
}

interface Base {
  readonly t: typeof RELAY_TAG;
  readonly topic: string;
}

export type StreamMessage = Base & { readonly hub: string; readonly seq: number } & (
  | { readonly type: 'beat'; readonly at: number; readonly secret?: string }
  | { readonly type: 'entries'; readonly entries: readonly DecodedEntry[] }
  | { readonly type: 'gap'; readonly cause: GapCause; readonly detail: string }
  | { readonly type: 'bad'; readonly reason: BadEntryReason; readonly id: string; readonly message: string }
  | { readonly type: 'status'; readonly status: ReaderStatus; readonly previous: ReaderStatus }
);

export type HelloMessage = Base & {
  readonly type: 'hello' | 'bye';
  readonly v: number;
  /** Random id of the subscribing cache. */
  readonly client: string;
  /** The cache's maxStaleMs: the hub refuses when its beats cannot come often enough. */
  readonly maxStaleMs: number;
  /**
   * The cache runs with relay 'auto' and is still opening: the hub may advise it to read directly
   * (`E_RELAY_DIRECT`). An open cache sends false: it stays subscribed whatever the worker count.
   */
  readonly auto?: boolean;
  /** secretId of the cache's HMAC secret (absent: no secret). */
  readonly secret?: string;
};

export type RefuseMessage = Base & { readonly type: 'refuse'; readonly client: string; readonly code: string; readonly message: string };

export type RelayMessage = StreamMessage | HelloMessage | RefuseMessage;

export function isRelayMessage(m: unknown): m is RelayMessage {
  return typeof m === 'object' && m !== null && (m as { t?: unknown }).t === RELAY_TAG && typeof (m as { topic?: unknown }).topic === 'string';
}

/**
 * Names an HMAC secret without revealing it: an HMAC of a fixed label keyed by the secret
 * (undefined when there is none). Hub and cache compare these to agree on signing.
 */
export function secretId(secret: string | Buffer | undefined): string | undefined {
  if (secret === undefined) return undefined;
  return createHmac('sha256', secret).update('cachebus-relay-secret-id').digest('hex').slice(0, 32);
}

/**
 * The host's monotonic clock (CLOCK_MONOTONIC) in ms: shared by every process and thread of a
 * host, immune to wall-clock steps. Beat times travel in it.
 */
export function hostNow(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
