import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, pingRedis } from '../redis-server.js';
import { CLI, sidecarStarted } from '../sidecar-proc.js';

/** Called when a process the torture owns exits without the nemesis (or the shutdown) asking. */
export type OnCrash = (what: string, detail: string) => void;

/**
 * The torture's own redis-server: loopback, a free port, AOF with fsync always (a restart keeps
 * every acknowledged write-behind row), stopped by PID. `wipe` restarts it empty.
 */
export class TortureRedis {
  readonly port: number;
  readonly #dir: string;
  #proc: ChildProcess | undefined;
  #expected = new Set<number>();

  private constructor(port: number, readonly onCrash: OnCrash) {
    this.port = port;
    this.#dir = mkdtempSync(join(tmpdir(), 'cachebus-torture-redis-'));
  }

  static async start(onCrash: OnCrash): Promise<TortureRedis> {
    const r = new TortureRedis(await freePort(), onCrash);
    await r.#start();
    return r;
  }

  get url(): string { return `redis://127.0.0.1:${this.port}`; }
  get up(): boolean { return this.#proc !== undefined; }

  async #start(): Promise<void> {
    const proc = spawn('redis-server', [
      '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always',
      '--dir', this.#dir, '--daemonize', 'no', '--loglevel', 'warning', '--maxmemory-policy', 'noeviction',
    ], { stdio: 'ignore' });
    proc.on('error', () => undefined);
    proc.once('exit', (code, signal) => {
      if (!this.#expected.delete(proc.pid!)) this.onCrash('redis-server', `exit ${code ?? signal}`);
    });
    this.#proc = proc;
    if (!(await pingRedis(this.url, 15_000))) throw new Error(`redis-server did not start on port ${this.port}`);
  }

  async #kill(): Promise<void> {
    const proc = this.#proc;
    this.#proc = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    this.#expected.add(proc.pid!);
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
  }

  /** kill -9, then the same server again on the same port (its AOF replayed). */
  async restart(): Promise<void> {
    await this.#kill();
    await this.#start();
  }

  /** kill -9, AOF deleted, an empty server on the same port. */
  async wipe(): Promise<void> {
    await this.#kill();
    rmSync(join(this.#dir, 'appendonlydir'), { recursive: true, force: true });
    await this.#start();
  }

  async dispose(): Promise<void> {
    await this.#kill();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** The `cachebus sidecar` (outbox relay + write-behind flusher), killed and restarted by the nemesis. */
export class TortureSidecar {
  #proc: ChildProcess | undefined;
  #expected = new Set<number>();
  #starting: Promise<void> | undefined;

  /** Called when a crashed sidecar is running again, with how long it was down (ms). */
  onRestart: ((downMs: number) => void) | undefined;

  constructor(readonly args: string[], readonly onCrash: OnCrash) {}

  get up(): boolean { return this.#proc !== undefined && this.#starting === undefined; }

  start(): Promise<void> {
    return (this.#starting ??= this.#start().finally(() => { this.#starting = undefined; }));
  }

  async #start(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#spawn();
        return;
      } catch (err) {
        // Redis or Postgres may be down under another fault: try again, a few times.
        if (attempt >= 20) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  async #spawn(): Promise<void> {
    const proc = spawn(process.execPath, ['--disable-warning=CACHEBUS_WB_DURABILITY', CLI, 'sidecar', '--port', '0', ...this.args],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer): void => { out = (out + d.toString()).slice(-8_000); };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    await sidecarStarted(proc, () => out, 20_000);
    proc.once('exit', (code, signal) => {
      if (this.#proc === proc) this.#proc = undefined;
      if (this.#expected.delete(proc.pid!)) return;
      this.onCrash('sidecar', `exit ${code ?? signal}:\n      ${out.trim().split('\n').slice(-40).join('\n      ')}`);
      // Counted as a crash; started again so the rest of the run still has an outbox relay and a flusher.
      const down = Date.now();
      this.start().then(() => this.onRestart?.(Date.now() - down), () => undefined);
    });
    this.#proc = proc;
  }

  /** kill -9 (no goodbye). Resolves once it is gone. */
  async kill(): Promise<boolean> {
    const proc = this.#proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return false;
    this.#proc = undefined;
    this.#expected.add(proc.pid!);
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
    return true;
  }

  /** SIGTERM, SIGKILL after 10 s. */
  async stop(): Promise<void> {
    await this.#starting?.catch(() => undefined);
    const proc = this.#proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    this.#expected.add(proc.pid!);
    const exited = new Promise((r) => proc.once('exit', r));
    const kill = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    proc.kill('SIGTERM');
    await exited;
    clearTimeout(kill);
    this.#proc = undefined;
  }
}
