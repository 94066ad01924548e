import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { adoptRegistry, type RegistryLike } from './registry-like.js';
import type { RedisClient } from '../../bus/connection.js';
import { adoptClient, type RedisClientLike } from '../../bus/redis-like.js';
import { quoteTable } from '../../bus/entities.js';
import { assertNamespace, writeBehindKeys, writeBehindShared, type BusKeys } from '../../bus/keys.js';
import { defaultWorkerLabel } from './metrics-labels.js';

/**
 * What the write-behind metrics read from a flusher (`Flusher` from bus/write-behind fits):
 * plain-number stats read at scrape time and `flushed` events for batch size and latency.
 */
export interface FlusherSource {
  readonly keys: BusKeys;
  readonly entities: readonly { readonly name: string }[];
  readonly stats: {
    readonly batches: number; readonly rowsFlushed: number; readonly rowsStale: number;
    readonly deadLetters: number; readonly retries: number; readonly redisErrors: number;
    readonly deadLettersDropped?: number; readonly rowsDeferred?: number;
  };
  on(event: 'flushed', listener: (info: { readonly rows: number; readonly durationMs: number }) => void): unknown;
  off(event: 'flushed', listener: (info: { readonly rows: number; readonly durationMs: number }) => void): unknown;
}

/** What the outbox metrics read from a relay (`OutboxRelay` from bus/outbox fits). */
export interface OutboxSource {
  readonly stats: {
    readonly rows: number; readonly batches: number; readonly errors: number; readonly lastBatchMaxAgeMs: number;
  };
}

/** Something that can run one SQL query (a `pg.Pool` fits). */
export interface Queryable {
  query(sql: string): Promise<{ rows: Record<string, unknown>[] }>;
}

export interface SidecarMetricsOptions {
  /** @defaultValue a new prom-client `Registry` */
  readonly registry?: RegistryLike;
  /** Value of the `worker` label (the sidecar instance). @defaultValue `defaultWorkerLabel()` */
  readonly worker?: string;
  /** How long each scrape-time read (Redis, Postgres) may take, ms. @defaultValue `1000` */
  readonly timeoutMs?: number;
}

/** Rows the outbox backlog query counts at most: the scrape stays bounded on a huge backlog. */
export const kOutboxBacklogLimit = 1_000_000;

/**
 * A bounded count of the outbox rows not yet relayed, for `SidecarMetrics.addOutbox`.
 * Counts at most `limit` rows (the gauge then reads `limit`).
 */
export function outboxBacklog(db: Queryable, table = 'cachebus_outbox', limit = kOutboxBacklogLimit): () => Promise<number> {
  const sql = `SELECT count(*)::bigint AS n FROM (SELECT 1 FROM ${quoteTable(table)} LIMIT ${Math.floor(limit)}) AS t`;
  return async () => Number((await db.query(sql)).rows[0]?.n ?? 0);
}

/**
 * Age in seconds of the oldest outbox row of `namespace` not relayed yet (0 when none), for
 * `SidecarMetrics.addOutbox`. Unlike the last batch's age it keeps growing while the relay is
 * stuck. One index probe (namespace, id).
 */
export function outboxOldestAge(db: Queryable, table: string, namespace: string): () => Promise<number> {
  assertNamespace(namespace); // inlined below: the namespace alphabet has no quote
  const sql = `SELECT extract(epoch FROM clock_timestamp() - created_at)::float8 AS s FROM ${quoteTable(table)} WHERE namespace = '${namespace}' ORDER BY id LIMIT 1`;
  return async () => Math.max(0, Number((await db.query(sql)).rows[0]?.s ?? 0));
}

interface FlusherEntry { readonly source: FlusherSource; readonly namespace: string; readonly redis: RedisClient; readonly off: () => void }
interface OutboxEntry {
  readonly source: OutboxSource; readonly namespace: string;
  readonly backlog?: (() => Promise<number>) | undefined; readonly oldestAge?: (() => Promise<number>) | undefined;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

type Labels = { namespace: string; worker: string };

/**
 * Metrics of the sidecar's services: write-behind flushers and outbox relays. Counters come
 * from the services' plain-number stats at scrape time; queue depth, pending rows, dead letters
 * and outbox backlog are read at scrape time (HLEN, ZCARD, LLEN, a bounded COUNT), each with a
 * timeout, a failure counted in `cachebus_scrape_errors_total` and the gauge left out.
 * A `MetricsSource`: pass it as the Sidecar's `metrics`.
 */
export class SidecarMetrics {
  readonly registry: Registry;
  readonly worker: string;
  readonly #flushers: FlusherEntry[] = [];
  readonly #outboxes: OutboxEntry[] = [];
  readonly #timeoutMs: number;
  readonly #batch: Histogram<string>;
  readonly #duration: Histogram<string>;
  readonly #errors: Counter<string>;
  /** Scrape-time reads of the scrape in progress (the error counter waits for them). */
  readonly #reads: Promise<unknown>[] = [];

  constructor(options: SidecarMetricsOptions = {}) {
    this.registry = adoptRegistry(options.registry, 'SidecarMetrics options.registry');
    this.worker = options.worker ?? defaultWorkerLabel();
    this.#timeoutMs = options.timeoutMs ?? 1000;
    const registers = [this.registry];
    const base = ['namespace', 'worker'];
    const flushers = (): FlusherEntry[] => this.#flushers;
    const outboxes = (): OutboxEntry[] => this.#outboxes;
    const label = (namespace: string): Labels => ({ namespace, worker: this.worker });
    const counter = <E extends { namespace: string }>(name: string, help: string, list: () => E[], read: (e: E) => number): void => {
      new Counter({
        name, help, registers, labelNames: base, aggregator: 'sum',
        collect() {
          this.reset();
          for (const e of list()) this.inc(label(e.namespace), read(e));
        },
      });
    };
    counter('cachebus_writebehind_batches_total', 'Write-behind batches flushed to Postgres.', flushers, (e) => e.source.stats.batches);
    counter('cachebus_writebehind_rows_flushed_total', 'Write-behind rows written to Postgres (incl. ones already there in a newer version).', flushers, (e) => e.source.stats.rowsFlushed);
    counter('cachebus_writebehind_rows_stale_total', 'Flushed rows Postgres already had in this or a newer version.', flushers, (e) => e.source.stats.rowsStale);
    counter('cachebus_writebehind_retries_total', 'Flush attempts that failed and were retried with backoff.', flushers, (e) => e.source.stats.retries);
    counter('cachebus_writebehind_dead_letters_total', 'Rows Postgres refused, moved to the dead-letter list.', flushers, (e) => e.source.stats.deadLetters);
    counter('cachebus_writebehind_dead_letters_dropped_total', 'Dead letters dropped (oldest first) because the list reached maxDeadLetters.', flushers, (e) => e.source.stats.deadLettersDropped ?? 0);
    counter('cachebus_writebehind_rows_deferred_total', 'Rows kept pending because the row their foreign key needs was itself pending.', flushers, (e) => e.source.stats.rowsDeferred ?? 0);
    counter('cachebus_writebehind_redis_errors_total', 'Redis errors of the flusher.', flushers, (e) => e.source.stats.redisErrors);
    counter('cachebus_outbox_rows_total', 'Outbox rows relayed to the stream.', outboxes, (e) => e.source.stats.rows);
    counter('cachebus_outbox_batches_total', 'Outbox batches relayed.', outboxes, (e) => e.source.stats.batches);
    counter('cachebus_outbox_errors_total', 'Outbox drain attempts that failed (retried with backoff).', outboxes, (e) => e.source.stats.errors);
    new Gauge({
      name: 'cachebus_outbox_last_batch_age_seconds', help: 'Age of the oldest row of the last outbox batch when it was taken.',
      registers, labelNames: base, aggregator: 'max',
      collect() {
        this.reset();
        for (const e of outboxes()) this.set(label(e.namespace), e.source.stats.lastBatchMaxAgeMs / 1000);
      },
    });
    const read = (source: string, l: Labels, f: () => Promise<number>): Promise<number | undefined> =>
      withTimeout(f(), this.#timeoutMs).catch(() => { this.#errors.inc({ ...l, source }); return undefined; });
    const scraped = (p: Promise<unknown>): void => { this.#reads.push(p); };
    const perEntity = (name: string, help: string, source: string, f: (r: RedisClient, k: ReturnType<typeof writeBehindKeys>) => Promise<number>): void => {
      new Gauge({
        name, help, registers, labelNames: [...base, 'entity'], aggregator: 'sum',
        async collect() {
          this.reset();
          const jobs = flushers().flatMap((e) => e.source.entities.map(async (ent) => {
            const l = label(e.namespace);
            const v = await read(source, l, () => f(e.redis, writeBehindKeys(e.source.keys, ent.name)));
            if (v !== undefined) this.inc({ ...l, entity: ent.name }, v);
          }));
          const all = Promise.all(jobs);
          scraped(all);
          await all;
        },
      });
    };
    perEntity('cachebus_writebehind_pending_rows', 'Rows written but not yet in Postgres (the overlay readers see first).', 'pending_rows', (r, k) => r.hlen(k.overlay));
    perEntity('cachebus_writebehind_queue_depth', 'Rows waiting for a flush (due or leased to a flusher).', 'queue_depth', (r, k) => r.zcard(k.dirty));
    /** A gauge read at scrape time, one read per entry; `combine` folds entries of one namespace. */
    const perNamespace = <E extends { namespace: string }>(
      name: string, help: string, source: string, list: () => E[], f: (e: E) => Promise<number>, combine: 'set' | 'inc',
    ): void => {
      new Gauge({
        name, help, registers, labelNames: base, aggregator: 'max',
        async collect() {
          this.reset();
          const all = Promise.all(list().map(async (e) => {
            const l = label(e.namespace);
            const v = await read(source, l, () => f(e));
            if (v !== undefined) this[combine](l, v);
          }));
          scraped(all);
          await all;
        },
      });
    };
    perNamespace('cachebus_writebehind_dead_letters', 'Rows in the dead-letter list now.', 'dead_letters',
      () => { const seen = new Set<string>(); return flushers().filter((e) => !seen.has(e.namespace) && seen.add(e.namespace)); },
      (e) => e.redis.llen(writeBehindShared(e.source.keys).dead), 'set');
    perNamespace('cachebus_outbox_backlog_rows', 'Outbox rows not relayed yet (a bounded count).', 'outbox_backlog',
      () => outboxes().filter((e) => e.backlog !== undefined), (e) => e.backlog!(), 'inc');
    perNamespace('cachebus_outbox_oldest_pending_age_seconds', 'Age of the oldest outbox row not relayed yet (0 when none).', 'outbox_oldest_age',
      () => outboxes().filter((e) => e.oldestAge !== undefined), (e) => e.oldestAge!(), 'set');
    // Registered after the scrape-time gauges, whose collects start first: waits for their reads,
    // so a failure shows in the same scrape.
    const reads = (): Promise<unknown> => Promise.all(this.#reads.splice(0));
    this.#errors = new Counter({
      name: 'cachebus_sidecar_scrape_errors_total', help: 'Scrape-time reads of the sidecar that failed (the gauge was left out).',
      registers, labelNames: [...base, 'source'], aggregator: 'sum',
      async collect() { await reads(); },
    });
    const histogram = (name: string, help: string, buckets: number[]): Histogram<string> =>
      new Histogram({ name, help, buckets, registers, labelNames: base, aggregator: 'sum' });
    this.#batch = histogram('cachebus_writebehind_flush_batch_rows', 'Rows per flushed batch.', [1, 5, 10, 50, 100, 500, 1000, 5000]);
    this.#duration = histogram('cachebus_writebehind_flush_duration_seconds', 'Duration of a batch flush (claim, upsert, ack).', [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]);
  }

  /** Prometheus text of the registry (`MetricsSource`). */
  metrics(): Promise<string> { return this.registry.metrics(); }
  get contentType(): string { return this.registry.contentType; }

  /** Reports a write-behind flusher; `redis` answers the scrape-time HLEN/ZCARD/LLEN. */
  addFlusher(source: FlusherSource, options: { namespace: string; redis: RedisClientLike }): this {
    const l = { namespace: options.namespace, worker: this.worker };
    const batch = this.#batch.labels(l);
    const duration = this.#duration.labels(l);
    const onFlushed = (info: { rows: number; durationMs: number }): void => {
      batch.observe(info.rows);
      duration.observe(info.durationMs / 1000);
    };
    source.on('flushed', onFlushed);
    this.#flushers.push({ source, namespace: options.namespace, redis: adoptClient(options.redis, 'addFlusher options.redis'), off: () => source.off('flushed', onFlushed) });
    return this;
  }

  /**
   * Reports an outbox relay; `backlog` (e.g. `outboxBacklog(pool, table)`) feeds the backlog gauge,
   * `oldestAge` (e.g. `outboxOldestAge(pool, table, namespace)`) the oldest-pending-row age gauge.
   */
  addOutbox(source: OutboxSource, options: { namespace: string; backlog?: () => Promise<number>; oldestAge?: () => Promise<number> }): this {
    this.#outboxes.push({ source, namespace: options.namespace, backlog: options.backlog, oldestAge: options.oldestAge });
    return this;
  }

  /** Stops listening to the flushers. */
  close(): void {
    for (const f of this.#flushers.splice(0)) f.off();
    this.#outboxes.splice(0);
  }
}
