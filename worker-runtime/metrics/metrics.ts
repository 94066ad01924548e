import cluster from 'node:cluster';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { adoptRegistry, type RegistryLike } from './registry-like.js';
import type { ReaderStatus } from '../../bus/reader.js';
import type { Cache } from '../cache.js';
import { answerClusterPrimary, releaseClusterRegistry } from './metrics-cluster.js';
import { defaultWorkerLabel, type BaseLabels } from './metrics-labels.js';
import { maxPendingOf } from '../write-behind-limits.js';
import type { StaleResult } from '../stale-sampler.js';

type AnyCache = Cache<any>;

export interface CacheMetricsOptions {
  /** Registry the metrics go into. @defaultValue a new prom-client `Registry` */
  readonly registry?: RegistryLike;
  /** Value of the `worker` label. @defaultValue `defaultWorkerLabel()` */
  readonly worker?: string;
  /**
   * In a node:cluster worker, answer the primary's aggregation requests (prom-client
   * `AggregatorRegistry`) with this registry. @defaultValue `cluster.isWorker`
   */
  readonly cluster?: boolean;
  /** How long the scrape waits for XINFO (bus cursor lag) per cache, ms. @defaultValue `500` */
  readonly cursorLagTimeoutMs?: number;
  /** Buckets of `cachebus_invalidation_lag_seconds`. @defaultValue 0.5 ms to 30 s */
  readonly lagBuckets?: readonly number[];
  /** Buckets of `cachebus_load_duration_seconds`. @defaultValue 0.5 ms to 10 s */
  readonly loadBuckets?: readonly number[];
  /** Buckets of `cachebus_stale_read_age_seconds`. @defaultValue 10 ms to 1 h */
  readonly staleAgeBuckets?: readonly number[];
}

export const kMetricsDefaults = {
  cursorLagTimeoutMs: 500,
  lagBuckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  loadBuckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  staleAgeBuckets: [0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600],
} as const;

const READER_STATUSES: readonly ReaderStatus[] = ['connecting', 'ready', 'reconnecting', 'closed'];

interface Tracked {
  readonly cache: AnyCache;
  readonly labels: BaseLabels;
  /** Invalidations applied (a `received` event is emitted after the entry was applied). */
  applied: number;
  readonly detach: () => void;
  /** Removes the event listeners. */
  readonly off: () => void;
}

type Read = (t: Tracked) => number | Readonly<Record<string, number>> | undefined;

/** Counters read from plain-number stats at scrape time: [name, help, read, label of the record keys]. */
const COUNTERS: readonly (readonly [string, string, Read, string?])[] = [
  ['cachebus_hits_total', 'Gets answered from the local cache.', (t) => t.cache.stats.hits],
  ['cachebus_misses_total', 'Gets not answered locally (absent, expired or not servable).', (t) => t.cache.stats.misses],
  ['cachebus_loads_total', 'Loader calls (one per key per process at a time: single-flight).', (t) => t.cache.stats.loads],
  ['cachebus_load_errors_total', 'Loader calls that threw or rejected.', (t) => t.cache.stats.loadErrors],
  ['cachebus_loads_discarded_total', 'Loads returned but not stored: an invalidation overtook them.', (t) => t.cache.stats.loadsDiscarded],
  ['cachebus_evictions_total', 'Entries the local policy removed (evict: capacity, expire: TTL).', (t) => t.cache.stats.evictions, 'reason'],
  ['cachebus_invalidated_entries_total', 'Local entries dropped by invalidations (local or remote).', (t) => t.cache.stats.keysDropped],
  ['cachebus_invalidations_published_total', 'Invalidations (invalidate, set, tags, clear) published by this worker.', (t) => t.cache.stats.invalidationsPublished],
  ['cachebus_bus_entries_published_total', 'Stream entries written (XADD) for those invalidations.', (t) => t.cache.stats.entriesPublished],
  ['cachebus_publish_errors_total', 'Publishes that failed (the local drop happened).', (t) => t.cache.stats.publishErrors],
  ['cachebus_invalidations_received_total', 'Stream entries from other workers handed to this cache.', (t) => t.cache.stats.entriesReceived],
  ['cachebus_invalidations_applied_total', 'Received entries applied to the local cache.', (t) => t.applied],
  ['cachebus_gaps_total', 'Gaps in the stream (entries missed); each clears the local cache.', (t) => t.cache.stats.gaps, 'cause'],
  ['cachebus_clears_total', 'Local cache clears, by cause.', (t) => t.cache.stats.clears, 'cause'],
  ['cachebus_bad_entries_total', 'Stream entries skipped as unreadable, by reason.', (t) => t.cache.stats.badEntries, 'reason'],
  ['cachebus_unservable_reads_total', 'Gets that bypassed local entries: the bus was not provably current.', (t) => t.cache.stats.unservableReads],
  ['cachebus_stale_checks_total', 'Hits picked by the stale-read sampler, by result.', (t) => staleResults(t), 'result'],
  ['cachebus_stale_reads_total', 'Sampled hits that served a stale value.', (t) => t.cache.staleSampler?.stats.stale],
];

function staleResults(t: Tracked): Record<StaleResult, number> | undefined {
  const s = t.cache.staleSampler?.stats;
  if (s === undefined) return undefined;
  return { fresh: s.fresh, stale: s.stale, inconclusive: s.inconclusive, error: s.errors, skipped: s.skipped };
}

/** A cache fed by a host relay hub (no reader of its own): its bus only publishes. */
const relayed = (cache: AnyCache): boolean => Boolean((cache as { relayMode?: unknown }).relayMode);

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** `entries-added` of the stream (0 when it does not exist). */
async function entriesAdded(cache: AnyCache): Promise<number> {
  const bus = cache.bus!;
  try {
    const reply = (await bus.client.xinfo('STREAM', bus.keys.stream)) as unknown[];
    for (let i = 0; i + 1 < reply.length; i += 2) if (String(reply[i]) === 'entries-added') return Number(reply[i + 1]);
    return 0;
  } catch (err) {
    if (/no such key/i.test(String((err as Error)?.message))) return 0;
    throw err;
  }
}

/**
 * Prometheus metrics of one or more caches in this worker (prom-client). Nothing runs on the
 * hit path: counters are read from each cache's plain-number `stats` at scrape time, gauges are
 * computed at scrape time (bus cursor lag with one XINFO per cache, bounded by a timeout), and
 * histograms are fed from events (`received` for lag, `load` for load duration, the sampler's
 * `checked` for stale-read age). Labels: `namespace`, `worker` and small fixed enums only.
 *
 * A `MetricsSource`: pass it to the sidecar or `serveMetrics` for `/metrics`.
 */
export class CacheMetrics {
  readonly registry: Registry;
  readonly worker: string;
  readonly #tracked = new Map<AnyCache, Tracked>();
  readonly #timeoutMs: number;
  readonly #names: string[] = [];
  readonly #lag: Histogram<string>;
  readonly #load: Histogram<string>;
  readonly #staleAge: Histogram<string>;
  readonly #scrapeErrors: Counter<string>;
  readonly #cluster: boolean;
  #closed = false;

  constructor(options: CacheMetricsOptions = {}) {
    this.registry = adoptRegistry(options.registry, 'CacheMetrics options.registry');
    this.worker = options.worker ?? defaultWorkerLabel();
    this.#timeoutMs = options.cursorLagTimeoutMs ?? kMetricsDefaults.cursorLagTimeoutMs;
    const tracked = (): Tracked[] => [...this.#tracked.values()];
    const reg = <M>(m: M): M => {
      this.#names.push((m as { name: string }).name);
      return m;
    };
    const base = ['namespace', 'worker'];
    for (const [name, help, read, label] of COUNTERS) {
      reg(new Counter({
        name, help, registers: [this.registry], labelNames: label ? [...base, label] : base, aggregator: 'sum',
        collect() {
          this.reset();
          for (const t of tracked()) {
            const v = read(t);
            if (typeof v === 'number') this.inc(t.labels, v);
            else if (v !== undefined) for (const [k, n] of Object.entries(v)) this.inc({ ...t.labels, [label!]: k }, n);
          }
        },
      }));
    }
    const gauge = (name: string, help: string, value: (t: Tracked) => number | undefined, aggregator: 'sum' | 'min' | 'max'): void => {
      reg(new Gauge({
        name, help, registers: [this.registry], labelNames: base, aggregator,
        collect() {
          this.reset();
          for (const t of tracked()) {
            const v = value(t);
            if (v !== undefined) this.inc(t.labels, v);
          }
        },
      }));
    };
    gauge('cachebus_entries', 'Entries in the local cache.', (t) => t.cache.size, 'sum');
    gauge('cachebus_bytes', 'Bytes in the local cache as measured by sizeOf (0 without maxBytes).', (t) => t.cache.bytes, 'sum');
    gauge('cachebus_servable', '1 while local entries are served, 0 while the bus is not provably current (maxStaleMs).', (t) => (t.cache.servable ? 1 : 0), 'min');
    reg(new Gauge({
      name: 'cachebus_reader_status', help: 'State of the stream reader: 1 for the current status.',
      registers: [this.registry], labelNames: [...base, 'status'], aggregator: 'sum',
      collect() {
        this.reset();
        for (const t of tracked()) {
          const bus = t.cache.bus;
          if (bus === undefined || relayed(t.cache)) continue;
          for (const s of READER_STATUSES) this.inc({ ...t.labels, status: s }, bus.status === s ? 1 : 0);
        }
      },
    }));
    reg(new Gauge({
      name: 'cachebus_writebehind_max_pending', help: 'maxPending of a write-behind entity: writes fail with E_WB_BACKPRESSURE at this many pending rows.',
      registers: [this.registry], labelNames: [...base, 'entity'], aggregator: 'min',
      collect() {
        this.reset();
        for (const t of tracked()) for (const [entity, max] of maxPendingOf(t.cache)) this.set({ ...t.labels, entity }, max);
      },
    }));
    const cursorLag = (t: Tracked): Promise<number | undefined> => this.#cursorLag(t);
    let lagScrape: Promise<unknown> = Promise.resolve();
    reg(new Gauge({
      name: 'cachebus_bus_cursor_lag_entries', help: "Stream entries added after the reader's cursor (not read yet).",
      registers: [this.registry], labelNames: base, aggregator: 'max',
      async collect() {
        this.reset();
        const all = tracked();
        const scrape = Promise.all(all.map(cursorLag));
        lagScrape = scrape;
        const lags = await scrape;
        all.forEach((t, i) => { if (lags[i] !== undefined) this.set(t.labels, lags[i]!); });
      },
    }));
    // Registered after the cursor lag, whose collect starts first: waits for it, so a failure
    // shows in the same scrape.
    this.#scrapeErrors = reg(new Counter({
      name: 'cachebus_scrape_errors_total', help: 'Scrape-time reads that failed (the metric was left out of that scrape).',
      registers: [this.registry], labelNames: [...base, 'source'], aggregator: 'sum',
      async collect() { await lagScrape; },
    }));
    const histogram = (name: string, help: string, buckets: readonly number[]): Histogram<string> =>
      reg(new Histogram({ name, help, buckets: [...buckets], registers: [this.registry], labelNames: base, aggregator: 'sum' }));
    this.#lag = histogram('cachebus_invalidation_lag_seconds', 'Time from publish to applied in this worker (clocks of both hosts).', options.lagBuckets ?? kMetricsDefaults.lagBuckets);
    this.#load = histogram('cachebus_load_duration_seconds', 'Duration of loader calls (misses that loaded).', options.loadBuckets ?? kMetricsDefaults.loadBuckets);
    this.#staleAge = histogram('cachebus_stale_read_age_seconds', 'How long the source had changed before a sampled stale hit (when the check knows).', options.staleAgeBuckets ?? kMetricsDefaults.staleAgeBuckets);
    this.#cluster = options.cluster ?? cluster.isWorker;
    if (this.#cluster) answerClusterPrimary(this.registry);
  }

  /** Names of every metric this registers. */
  get names(): string[] { return [...this.#names]; }

  /** Prometheus text of the registry (`MetricsSource`). */
  metrics(): Promise<string> { return this.registry.metrics(); }
  get contentType(): string { return this.registry.contentType; }

  /** Starts reporting a cache. Returns a function that stops it (also done by `remove`). */
  add(cache: AnyCache): () => void {
    if (this.#closed) throw new Error('CacheMetrics is closed');
    const existing = this.#tracked.get(cache);
    if (existing) return existing.detach;
    const labels: BaseLabels = { namespace: cache.namespace, worker: this.worker };
    const lag = this.#lag.labels(labels);
    const load = this.#load.labels(labels);
    const age = this.#staleAge.labels(labels);
    const onReceived = (info: { lagMs: number }): void => {
      t.applied++;
      lag.observe(Math.max(0, info.lagMs) / 1000);
    };
    const onLoad = (info: { durationMs: number }): void => load.observe(info.durationMs / 1000);
    const onChecked = (info: { ageSeconds?: number }): void => { if (info.ageSeconds !== undefined) age.observe(info.ageSeconds); };
    cache.on('received', onReceived);
    cache.on('load', onLoad);
    cache.staleSampler?.on('checked', onChecked);
    const t: Tracked = {
      cache, labels, applied: 0,
      detach: () => this.remove(cache),
      off: () => {
        cache.off('received', onReceived);
        cache.off('load', onLoad);
        cache.staleSampler?.off('checked', onChecked);
      },
    };
    this.#tracked.set(cache, t);
    return t.detach;
  }

  /** Stops reporting a cache; its series disappear from the next scrape. */
  remove(cache: AnyCache): void {
    const t = this.#tracked.get(cache);
    if (t === undefined) return;
    this.#tracked.delete(cache);
    t.off();
    const shared = [...this.#tracked.values()].some((o) => o.labels.namespace === t.labels.namespace);
    if (!shared) for (const h of [this.#lag, this.#load, this.#staleAge]) h.remove(t.labels);
  }

  /** Stops reporting every cache and unregisters the metrics from the registry. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of [...this.#tracked.keys()]) this.remove(c);
    for (const name of this.#names) this.registry.removeSingleMetric(name);
    if (this.#cluster) releaseClusterRegistry(this.registry);
  }

  async #cursorLag(t: Tracked): Promise<number | undefined> {
    const bus = t.cache.bus;
    if (bus === undefined || relayed(t.cache) || bus.counted === undefined || bus.status !== 'ready') return undefined;
    try {
      const added = await withTimeout(entriesAdded(t.cache), this.#timeoutMs);
      return Math.max(0, added - (bus.counted ?? added));
    } catch {
      this.#scrapeErrors.inc({ ...t.labels, source: 'cursor_lag' });
      return undefined;
    }
  }
}

/** Metrics for the given caches in a new (or the given) registry. */
export function cacheMetrics(caches: AnyCache | readonly AnyCache[], options?: CacheMetricsOptions): CacheMetrics {
  const m = new CacheMetrics(options);
  for (const c of Array.isArray(caches) ? caches : [caches as AnyCache]) m.add(c);
  return m;
}
