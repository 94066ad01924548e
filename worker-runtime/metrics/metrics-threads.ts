import { randomBytes } from 'node:crypto';
import { BroadcastChannel, threadId } from 'node:worker_threads';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { RegistryLike } from './registry-like.js';
import type { MetricsSource } from './metrics-http.js';

type MetricJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>[number];

/** Name of the BroadcastChannel threads and their parent talk on. */
export const kThreadMetricsChannel = 'cachebus:metrics';

type Msg =
  | { type: 'who' }
  | { type: 'hello' | 'bye'; from: string }
  | { type: 'req'; req: string }
  | { type: 'res'; req: string; from: string; metrics?: MetricJson[][]; error?: string };

/**
 * In a worker thread (piscina or plain worker_threads): answers the parent's
 * `ThreadMetricsCollector` with the registries' metrics. The channel is unref'd, so it never
 * keeps the thread alive. Returns a function that stops reporting.
 */
export function reportMetricsToParent(registries: RegistryLike | readonly RegistryLike[], channel = kThreadMetricsChannel): () => void {
  // any prom-client copy's registry: only getMetricsAsJSON is called
  const regs = (Array.isArray(registries) ? registries : [registries]) as readonly Registry[];
  const id = `${threadId}:${randomBytes(4).toString('hex')}`;
  const ch = new BroadcastChannel(channel);
  ch.unref();
  ch.onmessage = (ev) => {
    const m = (ev as MessageEvent).data as Msg;
    if (m.type === 'who') ch.postMessage({ type: 'hello', from: id } satisfies Msg);
    else if (m.type === 'req') {
      Promise.all(regs.map((r) => r.getMetricsAsJSON())).then(
        (metrics) => ch.postMessage({ type: 'res', req: m.req, from: id, metrics } satisfies Msg),
        (err: unknown) => ch.postMessage({ type: 'res', req: m.req, from: id, error: String(err) } satisfies Msg),
      );
    }
  };
  ch.postMessage({ type: 'hello', from: id } satisfies Msg);
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    ch.postMessage({ type: 'bye', from: id } satisfies Msg);
    ch.close();
  };
}

export interface ThreadMetricsOptions {
  /** The parent's own registries, aggregated with the threads'. @defaultValue none */
  readonly registries?: readonly RegistryLike[];
  /** How long a scrape waits for the threads, ms; a thread that does not answer is dropped. @defaultValue `1000` */
  readonly timeoutMs?: number;
  /** @defaultValue `kThreadMetricsChannel` */
  readonly channel?: string;
}

/**
 * In the parent of worker threads: a `MetricsSource` that asks every reporting thread for its
 * metrics at scrape time and aggregates them with the parent's own (prom-client
 * `AggregatorRegistry.aggregate`; series keep their `worker` label). Threads announce
 * themselves; one that does not answer a scrape in time is forgotten until it speaks again.
 */
export class ThreadMetricsCollector implements MetricsSource {
  readonly contentType: string = AggregatorRegistry.PROMETHEUS_CONTENT_TYPE;
  readonly #ch: BroadcastChannel;
  readonly #threads = new Set<string>();
  readonly #pending = new Map<string, { got: MetricJson[][]; waiting: Set<string>; done: () => void }>();
  readonly #o: ThreadMetricsOptions;

  constructor(options: ThreadMetricsOptions = {}) {
    this.#o = options;
    this.#ch = new BroadcastChannel(options.channel ?? kThreadMetricsChannel);
    this.#ch.unref();
    this.#ch.onmessage = (ev) => this.#on((ev as MessageEvent).data as Msg);
    this.#ch.postMessage({ type: 'who' } satisfies Msg);
  }

  /** Threads currently reporting. */
  get threads(): number { return this.#threads.size; }

  async metrics(): Promise<string> {
    return (await this.aggregate()).metrics();
  }

  /** One registry with the parent's and every answering thread's metrics. */
  async aggregate(): Promise<Registry> {
    const own = await Promise.all((this.#o.registries ?? []).map((r) => r.getMetricsAsJSON() as Promise<MetricJson[]>));
    const req = randomBytes(6).toString('hex');
    const entry = { got: [] as MetricJson[][], waiting: new Set(this.#threads), done: () => undefined as void };
    if (entry.waiting.size > 0) {
      const timeoutMs = this.#o.timeoutMs ?? 1000;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          for (const t of entry.waiting) this.#threads.delete(t); // silent: gone or stuck
          resolve();
        }, timeoutMs);
        entry.done = () => { clearTimeout(timer); resolve(); };
        this.#pending.set(req, entry);
        this.#ch.postMessage({ type: 'req', req } satisfies Msg);
      });
      this.#pending.delete(req);
    }
    return AggregatorRegistry.aggregate([...own, ...entry.got]);
  }

  close(): void {
    this.#ch.close();
    for (const p of this.#pending.values()) p.done();
  }

  #on(m: Msg): void {
    if (m.type === 'hello') this.#threads.add(m.from);
    else if (m.type === 'bye') {
      this.#threads.delete(m.from);
      for (const p of this.#pending.values()) if (p.waiting.delete(m.from) && p.waiting.size === 0) p.done();
    } else if (m.type === 'res') {
      this.#threads.add(m.from);
      const p = this.#pending.get(m.req);
      if (p === undefined || !p.waiting.delete(m.from)) return;
      if (m.metrics) p.got.push(...m.metrics);
      if (p.waiting.size === 0) p.done();
    }
  }
}
