import { randomBytes } from 'node:crypto';
import { BroadcastChannel, isMainThread, threadId } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { InvalidOptionError } from '../../bus/errors.js';
import { createCache, type Cache } from '../cache.js';
import type { CacheStats } from '../events.js';
import type { CacheOptions } from '../options.js';

/**
 * piscina integration: every worker thread keeps its own local cache, kept coherent by the
 * same bus as the processes (each thread is one more origin on the stream).
 *
 * - In the task module: `threadCache(options)` gives the thread's cache (created once).
 * - In the owning thread: `createCachePool(options)` makes a Piscina pool whose threads can
 *   run a bus reader; `threadStats(pool)` and `closeCachePool(pool)` reach every thread.
 */
export type PiscinaOptions = NonNullable<ConstructorParameters<typeof Piscina>[0]>;

/** One thread's caches as reported by `threadStats`. */
export interface ThreadCacheStats {
  readonly threadId: number;
  readonly namespace: string;
  readonly size: number;
  readonly servable: boolean;
  readonly stats: CacheStats;
}

const CHANNEL = 'cachebus:piscina';
type Request = { kind: 'request'; op: 'stats' | 'close'; nonce: string; threadIds: number[] };
type Reply = { kind: 'reply'; nonce: string; threadId: number; caches: ThreadCacheStats[] };

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- one map for caches of any value type
const caches = new Map<string, Promise<Cache<any>>>();

function snapshot(): Promise<ThreadCacheStats[]> {
  return Promise.all([...caches.values()].map(async (p) => {
    const c = await p;
    return { threadId, namespace: c.namespace, size: c.size, servable: c.servable, stats: structuredClone(c.stats) };
  })).catch(() => []);
}

const closeHooks: (() => unknown)[] = [];

async function closeAll(): Promise<void> {
  const all = [...caches.values()];
  caches.clear();
  await Promise.allSettled(all.map(async (p) => (await p).close()));
  for (const hook of closeHooks.splice(0).reverse()) {
    try {
      await hook();
    } catch (err) {
      console.error(`[cachebus:piscina] thread close hook failed: ${(err as Error)?.message ?? err}`);
    }
  }
}

/**
 * In a worker thread: runs `hook` when `closeCachePool` closes this thread's caches (after
 * they are closed), e.g. to end the thread's database pool. Hooks run in reverse order.
 */
export function onThreadClose(hook: () => unknown): void {
  closeHooks.push(hook);
}

// Every worker thread that loads cachebus answers the owning thread's requests.
if (!isMainThread) {
  const channel = new BroadcastChannel(CHANNEL);
  channel.onmessage = (ev: unknown): void => {
    const m = (ev as { data: Request | Reply }).data;
    if (m?.kind !== 'request' || !m.threadIds.includes(threadId)) return;
    void (async () => {
      const stats = await snapshot();
      if (m.op === 'close') await closeAll();
      channel.postMessage({ kind: 'reply', nonce: m.nonce, threadId, caches: stats } satisfies Reply);
    })();
  };
  channel.unref(); // never keeps a thread alive
}

/**
 * The cache of the calling thread for `options.namespace` (and prefix): created on the first
 * call, the same instance afterwards (later options are ignored). Call it from a piscina task
 * module; `closeCachePool` closes it before the thread ends.
 *
 * @example
 * ```ts
 * // task.ts, run by a pool from createCachePool({ filename: ... })
 * import { threadCache } from 'cachebus';
 * export default async function price(id: number) {
 *   const cache = await threadCache<{ price: number }>({ namespace: 'shop', maxEntries: 10_000 });
 *   return cache.get(`product:${id}`, () => loadProduct(id));
 * }
 * ```
 */
export function threadCache<V extends {} | null = {} | null>(options: CacheOptions<V>): Promise<Cache<V>> {
  const id = `${options.prefix ?? ''}\0${options.namespace}`;
  const existing = caches.get(id) as Promise<Cache<V>> | undefined;
  if (existing !== undefined) return existing;
  const p = createCache<V>(options);
  caches.set(id, p);
  p.catch(() => { if (caches.get(id) === p) caches.delete(id); });
  return p;
}

/**
 * A Piscina pool whose threads can keep a coherent cache. Differences from `new Piscina()`:
 * - `atomics` is `'disabled'` unless `'async'` is given. With piscina's default (`'sync'`) an idle
 *   thread sleeps in `Atomics.wait`, its event loop stops, and its bus reader and staleness
 *   watchdog stop with it: the thread would serve stale entries when it wakes. `'sync'` is refused.
 * - `idleTimeout` defaults to `Infinity`: ending an idle thread throws its warm cache away.
 */
export function createCachePool<T = unknown, R = unknown>(options: PiscinaOptions): Piscina<T, R> {
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('options must be an object');
  if (options.atomics === 'sync') {
    throw new InvalidOptionError(
      "options.atomics must be 'disabled' or 'async': with 'sync' an idle thread blocks in Atomics.wait and its cache stops applying invalidations",
    );
  }
  return new Piscina<T, R>({ idleTimeout: Infinity, ...options, atomics: options.atomics ?? 'disabled' });
}

async function ask(pool: Piscina, op: Request['op'], timeoutMs: number): Promise<Map<number, ThreadCacheStats[]>> {
  const threadIds = pool.threads.map((t) => t.threadId).filter((id) => id >= 0);
  const replies = new Map<number, ThreadCacheStats[]>();
  if (threadIds.length === 0) return replies;
  const channel = new BroadcastChannel(CHANNEL);
  const nonce = randomBytes(8).toString('hex');
  try {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      channel.onmessage = (ev: unknown): void => {
        const m = (ev as { data: Request | Reply }).data;
        if (m?.kind !== 'reply' || m.nonce !== nonce) return;
        replies.set(m.threadId, m.caches);
        if (replies.size === threadIds.length) { clearTimeout(timer); resolve(); }
      };
      channel.postMessage({ kind: 'request', op, nonce, threadIds } satisfies Request);
    });
  } finally {
    channel.close();
  }
  return replies;
}

/**
 * Stats of the caches of every live thread of the pool (threads that have not created a
 * cache report none). Threads that do not answer within `timeoutMs` are left out.
 */
export async function threadStats(pool: Piscina, timeoutMs = 2_000): Promise<ThreadCacheStats[]> {
  return [...(await ask(pool, 'stats', timeoutMs)).values()].flat();
}

/**
 * Closes the caches of every thread of the pool (pending publishes are flushed, connections
 * quit), then destroys the pool. Await the tasks you care about first: piscina rejects tasks
 * still queued. Returns the final stats of the threads' caches. Idempotent enough: a second
 * call on a destroyed pool returns `[]`.
 */
export async function closeCachePool(pool: Piscina, timeoutMs = 5_000): Promise<ThreadCacheStats[]> {
  const replies = await ask(pool, 'close', timeoutMs);
  await pool.destroy().catch(() => undefined);
  return [...replies.values()].flat();
}
