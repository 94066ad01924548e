import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The compiled `cachebus` CLI: the demo drives the sidecar and the triggers the way a user would. */
export const CLI = fileURLToPath(new URL('../cli/cachebus.js', import.meta.url));
const run = promisify(execFile);

/** Runs one `cachebus` command to completion; rejects with its stderr. */
export async function cachebus(args: string[]): Promise<string> {
  try {
    const { stdout } = await run(process.execPath, [CLI, ...args], { timeout: 30_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`cachebus ${args[0]} failed: ${(e.stderr || e.message).trim()}`);
  }
}

/**
 * Resolves once a `cachebus sidecar` process says it is running; rejects (and kills it) when it
 * exits first or is not running within `ms`. `output` is what it printed so far.
 */
export function sidecarStarted(proc: ChildProcess, output: () => string, ms: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`cachebus sidecar did not start within ${ms / 1000} s`)), ms);
    const check = (): void => { if (/running/.test(output())) done(); };
    const exit = (code: number | null): void => done(new Error(`cachebus sidecar exited (${code}) while starting: ${output().trim()}`));
    function done(err?: Error): void {
      clearTimeout(timer);
      proc.stdout!.off('data', check);
      proc.off('exit', exit);
      if (err) { proc.kill('SIGKILL'); reject(err); } else resolve();
    }
    proc.stdout!.on('data', check);
    proc.once('exit', exit);
  });
}

/** A `cachebus sidecar` child process (outbox relay + write-behind flusher), stopped by PID. */
export class SidecarProcess {
  readonly #proc: ChildProcess;
  #exited: Promise<void>;

  private constructor(proc: ChildProcess) {
    this.#proc = proc;
    this.#exited = new Promise((resolve) => proc.once('exit', () => resolve()));
  }

  /** Starts the sidecar and resolves once it says it is running (rejects after 30 s or if it exits). */
  static async start(o: { namespace: string; prefix: string; redis: string; database: string; outbox?: string }): Promise<SidecarProcess> {
    const proc = spawn(process.execPath, [
      '--disable-warning=CACHEBUS_WB_DURABILITY', CLI, 'sidecar',
      '--namespace', o.namespace, '--prefix', o.prefix, '--redis', o.redis, '--database', o.database, '--port', '0',
      ...(o.outbox ? ['--outbox-table', o.outbox] : []),
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const s = new SidecarProcess(proc);
    let out = '';
    const onData = (d: Buffer): void => { out += d.toString(); };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    try {
      await sidecarStarted(proc, () => out, 30_000);
    } finally {
      proc.stdout!.off('data', onData);
      proc.stderr!.off('data', onData);
      proc.stdout!.resume();
      proc.stderr!.resume();
    }
    return s;
  }

  /** SIGTERM (the sidecar finishes its batch), SIGKILL after 10 s. */
  async stop(): Promise<void> {
    if (this.#proc.exitCode !== null || this.#proc.signalCode !== null) return;
    const kill = setTimeout(() => this.#proc.kill('SIGKILL'), 10_000);
    this.#proc.kill('SIGTERM');
    await this.#exited;
    clearTimeout(kill);
  }
}
