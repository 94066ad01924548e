import { Bus, type BusHandlers } from '../bus/bus.js';
import { InvalidOptionError } from '../bus/errors.js';
import type { LocalEntries } from './entries.js';
import type { CacheEvents, CacheStats } from './events.js';
import type { ResolvedOptions } from './options.js';
import { RelayClient, resolveRelayMode } from './relay-client.js';
import { kHoldBacklog, kHoldSourceClosed, type Servability } from './servable.js';
import type { Cacheable } from './types.js';

// Where a cache's invalidations come from: its own stream reader (a Bus) or the host's relay hub
// (a RelayClient), and what it does with what they deliver: entries dropped (I1), a gap clears
// the local cache (I2), proofs of being caught up extend the serving deadline (I3), bad entries
// are counted and skipped (I7).

export interface SourceHost<V extends Cacheable> {
  readonly stats: CacheStats;
  readonly entries: LocalEntries<V>;
  readonly fresh: Servability;
  emitSafe<K extends keyof CacheEvents>(event: K, ...args: CacheEvents[K]): void;
  error(err: unknown): void;
  closed(): boolean;
}

/** The reader's callbacks for one cache (its bus or its relay client calls them). */
export function readerHandlers<V extends Cacheable>(host: SourceHost<V>): BusHandlers {
  const { stats, entries, fresh } = host;
  return {
    onEntry: (e) => {
      stats.entriesReceived++;
      const dropped = e.clear ? entries.clear('remote') : entries.apply(e.keys, e.tags, e.tags.length > 0 ? 'tag' : 'invalidate');
      host.emitSafe('received', {
        id: e.id, origin: e.origin, keys: e.keys.length, tags: e.tags.length, clear: e.clear,
        lagMs: Date.now() - e.time, dropped,
      });
    },
    // A wake-up hint (option wake: 'pubsub'): the drop only, early. The stream entry still comes
    // and is applied (and counted, and reported as `received`) by onEntry; dropping twice is harmless.
    onHint: (e) => {
      if (e.clear) entries.clear('remote');
      else entries.apply(e.keys, e.tags, e.tags.length > 0 ? 'tag' : 'invalidate');
    },
    onGap: (cause, detail) => {
      stats.gaps[cause]++;
      entries.clear('gap');
      host.emitSafe('gap', { cause, detail });
    },
    onBadEntry: (reason, id, message) => {
      stats.badEntries[reason]++;
      host.emitSafe('badEntry', { reason, id, message });
    },
    onStatus: (status, previous) => {
      if (!host.closed()) fresh.hold(kHoldSourceClosed, status === 'closed'); // a closed hub proves nothing more
      host.emitSafe('status', { status, previous });
    },
    onCaughtUp: (at) => fresh.caughtUp(at),
    onError: (err) => host.error(err),
  };
}

/**
 * Opens the bus (and, in relay mode, the relay client first: the host's hub reads, the bus only
 * publishes). Closes what it opened if the bus cannot be opened.
 */
export async function openSource<V>(o: ResolvedOptions<V>, handlers: BusHandlers, fresh: Servability): Promise<{ bus: Bus; relay: RelayClient | undefined }> {
  const redis = o.redis;
  if (redis === false) throw new InvalidOptionError('a cache with options.redis false has no bus'); // the caller checks first
  const mode = resolveRelayMode(o.relay);
  let bus: Bus | undefined;
  let relay: RelayClient | undefined;
  if (mode !== false) {
    // Relay mode: the host's hub reads (undefined when the hub advises reading directly).
    relay = await RelayClient.open(mode, {
      prefix: o.prefix, namespace: o.namespace, origin: () => bus?.origin, maxStaleMs: o.maxStaleMs,
      connectTimeoutMs: o.connectTimeoutMs ?? 10_000, auto: o.relay === 'auto', secret: o.secret,
    }, handlers);
  }
  bus = await Bus.open(
    {
      redis, namespace: o.namespace, prefix: o.prefix, secret: o.secret,
      maxEntryBytes: o.maxEntryBytes, streamMaxLen: o.streamMaxLen, streamMaxAgeMs: o.streamMaxAgeMs,
      readCount: o.readCount, blockMs: o.blockMs, connectTimeoutMs: o.connectTimeoutMs,
      publishOnly: relay !== undefined,
      onBacklog: (pending) => fresh.hold(kHoldBacklog, pending),
      wake: o.wake, hostFanout: o.hostFanout,
    },
    handlers,
  ).catch((err: unknown) => { relay?.close(); throw err; });
  return { bus, relay };
}
