import cluster, { type Worker } from 'node:cluster';
import { EventEmitter } from 'node:events';
import { availableParallelism } from 'node:os';
import { backoff } from '../../bus/connection.js';
import { ClusterError, InvalidOptionError } from '../../bus/errors.js';

/**
 * node:cluster wiring: `startCluster` in the primary forks N workers, hands each its index and
 * a configuration, restarts crashed workers with backoff and stops them gracefully.
 * `workerConfig`, `workerIndex`, `workerReady` and `onShutdown` are for the workers.
 */
export interface ClusterOptions<C = unknown> {
  /** Module each worker runs. @defaultValue `process.argv[1]` (the primary's own script, as node:cluster does) */
  exec?: string;
  /** Arguments passed to each worker. @defaultValue `[]` */
  args?: string[];
  /** Node.js flags for the workers. @defaultValue `process.execArgv` */
  execArgv?: string[];
  /** Number of workers. @defaultValue `os.availableParallelism()` */
  workers?: number;
  /** JSON-serialisable configuration handed to every worker; read it there with `workerConfig()`. @defaultValue `null` */
  config?: C;
  /** Extra environment variables for the workers. @defaultValue `{}` */
  env?: Record<string, string>;
  /** Restart workers that exit while the cluster is not stopping. @defaultValue `true` */
  restart?: boolean;
  /** First restart delay of a slot, ms; doubles per consecutive crash (with jitter). @defaultValue `100` */
  restartDelayMs?: number;
  /** Longest restart delay, ms. @defaultValue `5_000` */
  restartMaxDelayMs?: number;
  /** A worker that ran this long before exiting resets its slot's backoff, ms. @defaultValue `10_000` */
  stableAfterMs?: number;
  /** How long `startCluster` waits for every worker's `workerReady()`, ms. @defaultValue `30_000` */
  readyTimeoutMs?: number;
  /** How long `stop()` lets workers run their shutdown hooks before SIGKILL, ms. @defaultValue `10_000` */
  shutdownTimeoutMs?: number;
  /** Pipe the workers' stdout/stderr to the primary's `worker.process` streams instead of inheriting them. @defaultValue `false` */
  silent?: boolean;
}

export const kClusterDefaults = {
  restart: true,
  restartDelayMs: 100,
  restartMaxDelayMs: 5_000,
  stableAfterMs: 10_000,
  readyTimeoutMs: 30_000,
  shutdownTimeoutMs: 10_000,
  silent: false,
} as const satisfies Partial<ClusterOptions>;

/** One worker slot as the primary sees it. A restarted worker keeps its slot's index. */
export interface ClusterWorkerInfo {
  /** Slot, 0 … workers-1 (also `workerIndex()` in the worker). */
  readonly index: number;
  /** node:cluster worker id. */
  readonly id: number;
  readonly pid: number;
  /** Restarts of this slot so far. */
  readonly restarts: number;
  /** What the worker passed to `workerReady(info)`; undefined until it is ready. */
  readonly info: unknown;
  readonly ready: boolean;
}

export interface ClusterEvents {
  /** A worker (first start or restart) called `workerReady()`. */
  ready: [worker: ClusterWorkerInfo];
  /** A worker exited; `expected` is true during `stop()`. */
  exit: [info: { index: number; pid: number; code: number | null; signal: string | null; expected: boolean }];
  /** A slot will be forked again after `delayMs`. */
  restart: [info: { index: number; attempt: number; delayMs: number }];
  /** A message a worker sent with `process.send` (cachebus' own control messages are not included). */
  message: [index: number, message: unknown];
  error: [err: unknown];
}

const ENV_FLAG = 'CACHEBUS_CLUSTER';
const ENV_INDEX = 'CACHEBUS_WORKER_INDEX';
const ENV_CONFIG = 'CACHEBUS_WORKER_CONFIG';
type Control = { cachebus: 'ready'; info: unknown } | { cachebus: 'shutdown' };
const isControl = (m: unknown): m is Control =>
  typeof m === 'object' && m !== null && typeof (m as { cachebus?: unknown }).cachebus === 'string';

interface Slot {
  worker: Worker | undefined;
  startedAt: number;
  restarts: number;
  failures: number;
  info: unknown;
  ready: boolean;
  timer: NodeJS.Timeout | undefined;
}

type Resolved = Required<Omit<ClusterOptions, 'config' | 'exec'>> & { exec: string | undefined; config: unknown };

/** A running cluster, returned by `startCluster`. */
export class ClusterHandle extends EventEmitter<ClusterEvents> {
  readonly #o: Resolved;
  readonly #slots: Slot[];
  #stopping: Promise<void> | undefined;

  /** @internal use startCluster */
  constructor(o: Resolved) {
    super();
    this.#o = o;
    this.#slots = Array.from({ length: o.workers }, () => ({
      worker: undefined, startedAt: 0, restarts: 0, failures: 0, info: undefined, ready: false, timer: undefined,
    }));
  }

  /** The slots, by index; `undefined` while a slot waits to be restarted. */
  get workers(): readonly (ClusterWorkerInfo | undefined)[] {
    return this.#slots.map((s, index) => (s.worker?.process.pid === undefined ? undefined : {
      index, id: s.worker.id, pid: s.worker.process.pid, restarts: s.restarts, info: s.info, ready: s.ready,
    }));
  }

  /** The live node:cluster Worker of a slot (for its process streams or `kill`). */
  worker(index: number): Worker | undefined {
    return this.#slots[index]?.worker;
  }

  /** Sends a message to one worker; false if that slot has no live worker. */
  send(index: number, message: unknown): boolean {
    const w = this.#slots[index]?.worker;
    if (w === undefined || !w.isConnected()) return false;
    w.send(message as object);
    return true;
  }

  /** Sends a message to every live worker. */
  broadcast(message: unknown): void {
    for (let i = 0; i < this.#slots.length; i++) this.send(i, message);
  }

  /** @internal */
  async start(): Promise<this> {
    for (let i = 0; i < this.#slots.length; i++) this.#fork(i);
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (this.#slots.every((s) => s.ready)) { this.off('ready', check); resolve(); }
        };
        this.on('ready', check);
        timer = setTimeout(() => {
          this.off('ready', check);
          const missing = this.#slots.flatMap((s, i) => (s.ready ? [] : [i]));
          reject(new ClusterError(
            `worker(s) ${missing.join(', ')} did not call workerReady() within ${this.#o.readyTimeoutMs} ms (options.readyTimeoutMs)`,
          ));
        }, this.#o.readyTimeoutMs);
      });
    } catch (err) {
      await this.stop();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return this;
  }

  /**
   * Asks every worker to shut down (its `onShutdown` hooks run), waits up to
   * `shutdownTimeoutMs`, then SIGKILLs what is left. No restarts after this. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const exits: Promise<void>[] = [];
      for (const slot of this.#slots) {
        clearTimeout(slot.timer);
        const w = slot.worker;
        if (w === undefined || w.isDead()) continue;
        exits.push(new Promise<void>((resolve) => {
          const kill = setTimeout(() => w.process.kill('SIGKILL'), this.#o.shutdownTimeoutMs);
          w.once('exit', () => { clearTimeout(kill); resolve(); });
        }));
        if (w.isConnected()) w.send({ cachebus: 'shutdown' } satisfies Control);
        else w.process.kill('SIGTERM');
      }
      await Promise.all(exits);
    })();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  #fork(index: number): void {
    const o = this.#o;
    const slot = this.#slots[index]!;
    // Without options.exec, node:cluster's own default (process.argv[1]) applies: an explicit
    // `exec: undefined` would override it and fork() would throw ERR_INVALID_ARG_TYPE.
    cluster.setupPrimary({ ...(o.exec !== undefined ? { exec: o.exec } : {}), args: o.args, execArgv: o.execArgv, silent: o.silent });
    const w = cluster.fork({
      ...o.env, [ENV_FLAG]: '1', [ENV_INDEX]: String(index), [ENV_CONFIG]: JSON.stringify(o.config ?? null),
    });
    Object.assign(slot, { worker: w, startedAt: Date.now(), info: undefined, ready: false, timer: undefined });
    w.on('message', (m: unknown) => {
      if (!isControl(m)) { this.emit('message', index, m); return; }
      if (m.cachebus === 'ready' && slot.worker === w) {
        slot.ready = true;
        slot.info = m.info;
        this.emit('ready', this.workers[index]!);
      }
    });
    w.on('error', (err) => this.#error(err));
    w.once('exit', (code, signal) => this.#onExit(index, w, code, signal));
  }

  #onExit(index: number, w: Worker, code: number | null, signal: string | null): void {
    const slot = this.#slots[index]!;
    const expected = this.#stopping !== undefined;
    this.emit('exit', { index, pid: w.process.pid ?? 0, code, signal, expected });
    if (slot.worker !== w) return;
    slot.worker = undefined;
    slot.ready = false;
    if (expected || !this.#o.restart) return;
    if (Date.now() - slot.startedAt >= this.#o.stableAfterMs) slot.failures = 0;
    const delayMs = backoff(slot.failures++, this.#o.restartDelayMs, this.#o.restartMaxDelayMs);
    slot.restarts++;
    this.emit('restart', { index, attempt: slot.restarts, delayMs });
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (this.#stopping === undefined) this.#fork(index);
    }, delayMs);
  }

  #error(err: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else console.error(`[cachebus:cluster] ${(err as Error)?.message ?? err}`);
  }
}

function resolveClusterOptions<C>(user: ClusterOptions<C>): Resolved {
  if (user === null || typeof user !== 'object') throw new InvalidOptionError('options must be an object');
  const o = {
    ...kClusterDefaults, args: [], execArgv: process.execArgv, env: {}, workers: availableParallelism(), ...user,
  } as Resolved;
  if (!Number.isInteger(o.workers) || o.workers < 1) throw new InvalidOptionError(`options.workers must be a positive integer (got ${String(o.workers)})`);
  for (const n of ['restartDelayMs', 'restartMaxDelayMs', 'stableAfterMs', 'readyTimeoutMs', 'shutdownTimeoutMs'] as const) {
    if (typeof o[n] !== 'number' || !(o[n] >= 0)) throw new InvalidOptionError(`options.${n} must be a non-negative number (got ${String(o[n])})`);
  }
  try {
    JSON.stringify(o.config ?? null);
  } catch (err) {
    throw new InvalidOptionError(`options.config must be JSON-serialisable (${(err as Error).message})`);
  }
  return o;
}

/**
 * Forks `workers` node:cluster workers running `exec` and resolves once every one of them has
 * called `workerReady()`. Crashed workers are forked again into the same slot after an
 * exponential backoff. Call it in the primary only.
 *
 * @example
 * ```ts
 * if (cluster.isPrimary) {
 *   const c = await startCluster({ workers: 4, config: { port: 8080 } });
 *   process.once('SIGINT', () => void c.stop());
 * } else {
 *   const { port } = workerConfig<{ port: number }>();
 *   const server = http.createServer(handler).listen(port, () => workerReady());
 *   onShutdown(() => new Promise((r) => server.close(() => r())));
 * }
 * ```
 */
export async function startCluster<C = unknown>(options: ClusterOptions<C> = {}): Promise<ClusterHandle> {
  if (!cluster.isPrimary) throw new ClusterError('startCluster must be called in the primary process');
  return new ClusterHandle(resolveClusterOptions(options)).start();
}

// ---- worker side -------------------------------------------------------------------------

/** true in a process forked by `startCluster`. */
export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env[ENV_FLAG] === '1';
}

function assertWorker(fn: string): void {
  if (!isClusterWorker()) throw new ClusterError(`${fn}() is only available in a worker forked by startCluster`);
}

/** This worker's slot, 0 … workers-1; stable across restarts. */
export function workerIndex(): number {
  assertWorker('workerIndex');
  return Number(process.env[ENV_INDEX]);
}

/** The `config` the primary passed to `startCluster`. */
export function workerConfig<C = unknown>(): C {
  assertWorker('workerConfig');
  return JSON.parse(process.env[ENV_CONFIG] ?? 'null') as C;
}

/** Tells the primary this worker is ready; `info` (JSON-serialisable, e.g. its port) reaches `ClusterHandle.workers` and the `ready` event. */
export function workerReady(info?: unknown): void {
  assertWorker('workerReady');
  process.send?.({ cachebus: 'ready', info: info ?? null } satisfies Control);
}

const hooks: (() => unknown)[] = [];
let shuttingDown = false;

/**
 * Registers a hook run when the worker is asked to stop (`stop()` in the primary, SIGTERM, or
 * the primary going away). Hooks run in reverse order of registration (close the server
 * before the cache it uses); then the worker exits (code 1 if a hook threw).
 */
export function onShutdown(hook: () => unknown): void {
  assertWorker('onShutdown');
  hooks.push(hook);
}

async function shutdown(): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  let code = 0;
  for (const hook of [...hooks].reverse()) {
    try {
      await hook();
    } catch (err) {
      code = 1;
      console.error(`[cachebus:cluster] shutdown hook failed: ${(err as Error)?.stack ?? err}`);
    }
  }
  process.exit(code);
}

// Installed once in workers forked by startCluster: Ctrl-C reaches the whole process group, but
// the primary owns shutdown (it sends `shutdown`), so workers ignore SIGINT.
if (isClusterWorker()) {
  process.on('message', (m: unknown) => {
    if (isControl(m) && m.cachebus === 'shutdown') void shutdown();
  });
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => undefined);
  process.on('disconnect', () => void shutdown());
}
