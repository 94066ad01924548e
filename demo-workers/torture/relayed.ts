import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { RelayHubStats } from '../../worker-runtime/cluster/index.js';
import type { TortureReady, TortureWorkerConfig } from './layout.js';

const HOST = fileURLToPath(new URL('./relay-host.js', import.meta.url));

export interface RelayedExit { readonly pid: number; readonly code: number | null; readonly signal: string | null; readonly expected: boolean }

/**
 * The torture's side of relay-host.ts: the hub's process (which the nemesis may SIGSTOP) and
 * the worker it feeds, seen as one more worker slot. `onExit` hears every exit of that worker;
 * `crash` an exit of the host the torture did not ask for.
 */
export class RelayedWorker {
  /** The relayed worker's HTTP port and pid; undefined while it restarts. */
  slot: TortureReady | undefined;
  /** The hub's counters, as last reported (every second). */
  stats: RelayHubStats | undefined;
  #tail = '';
  #stopping = false;
  readonly #exited: Promise<void>;

  private constructor(readonly proc: ChildProcess, onExit: (e: RelayedExit) => void, crash: (what: string, detail: string) => void) {
    const keep = (d: Buffer): void => { this.#tail = (this.#tail + d.toString()).slice(-8_000); };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    proc.on('message', (m: { ready?: TortureReady; exit?: RelayedExit; stats?: RelayHubStats }) => {
      if (m?.stats) this.stats = m.stats;
      if (m?.ready) this.slot = m.ready;
      if (m?.exit) {
        if (this.slot?.pid === m.exit.pid) this.slot = undefined;
        onExit(m.exit);
      }
    });
    this.#exited = new Promise((resolve) => proc.once('exit', (code, signal) => {
      this.slot = undefined;
      if (!this.#stopping) crash('relay hub host', `pid ${proc.pid} exit ${code ?? signal}: ${this.tail()}`);
      resolve();
    }));
  }

  /** Forks the host and waits until its worker is ready (60 s at most). */
  static async start(config: TortureWorkerConfig, onExit: (e: RelayedExit) => void, crash: (what: string, detail: string) => void): Promise<RelayedWorker> {
    const proc = fork(HOST, [JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'], execArgv: [...process.execArgv, '--disable-warning=CACHEBUS_WB_DURABILITY'],
    });
    const r = new RelayedWorker(proc, onExit, crash);
    const deadline = Date.now() + 60_000;
    while (r.slot === undefined) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`the relay hub host exited before its worker was ready: ${r.tail()}`);
      if (Date.now() > deadline) { await r.stop(); throw new Error(`the relay hub host's worker was not ready within 60 s: ${r.tail()}`); }
      await new Promise((res) => setTimeout(res, 100));
    }
    return r;
  }

  /** The hub's pid (the host process). */
  get pid(): number | undefined { return this.proc.exitCode === null && this.proc.signalCode === null ? this.proc.pid : undefined; }

  tail(): string { return this.#tail.trim().split('\n').slice(-60).join('\n      '); }

  /** Stops the worker and the hub (SIGCONT first: a stopped host would never answer). */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.pid === undefined) return;
    try { process.kill(this.proc.pid!, 'SIGCONT'); } catch { /* gone */ }
    if (this.proc.connected) this.proc.send('stop');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 15_000);
    await this.#exited;
    clearTimeout(timer);
  }
}
