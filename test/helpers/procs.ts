import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import { waitForEvent } from './wait.js';

/** Compiled fixtures (`npm test` builds first). */
export const FIXTURES = fileURLToPath(new URL('../../dist/test/fixtures/', import.meta.url));

export interface WorkerReply { ok: boolean; value?: unknown; error?: string; code?: string }

/** A cache running in its own OS process (test/fixtures/worker.ts), driven over IPC. */
export class WorkerProc extends EventEmitter {
  readonly child: ChildProcess;
  origin = '';
  #next = 1;
  #pending = new Map<number, (r: WorkerReply) => void>();

  private constructor(options: object) {
    super();
    this.child = fork(`${FIXTURES}worker.js`, [JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: { id?: number; event?: string; payload?: unknown } & WorkerReply) => {
      if (m.id !== undefined) {
        this.#pending.get(m.id)?.(m);
        this.#pending.delete(m.id);
      } else if (m.event) {
        this.emit(m.event, m.payload);
      }
    });
  }

  static async start(options: object, timeoutMs = 15_000): Promise<WorkerProc> {
    const w = new WorkerProc(options);
    const fatal = waitForEvent<string>(w, 'fatal', () => true, timeoutMs).then((s) => { throw new Error(`worker failed: ${s}`); });
    const ready = await Promise.race([waitForEvent<{ origin: string }>(w, 'ready', () => true, timeoutMs), fatal]);
    fatal.catch(() => undefined);
    w.origin = ready.origin;
    return w;
  }

  /** Sends one op; resolves with its reply (rejects on error replies). */
  async call<T = unknown>(op: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<T> {
    const id = this.#next++;
    const reply = await new Promise<WorkerReply>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`op ${op} timed out`)), timeoutMs);
      this.#pending.set(id, (r) => { clearTimeout(timer); resolve(r); });
      this.child.send({ id, op, ...args });
    });
    if (!reply.ok) throw Object.assign(new Error(reply.error), { code: reply.code });
    return reply.value as T;
  }

  wait<T = unknown>(event: string, filter: (p: T) => boolean = () => true, timeoutMs = 10_000): Promise<T> {
    return waitForEvent<T>(this, event, filter, timeoutMs);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    try {
      await this.call('close', {}, 5_000);
    } catch { /* killed below */ }
    this.child.kill('SIGKILL');
    await exited;
  }
}
