import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

/** true when a `redis-server` binary is on PATH. */
export function hasRedisServer(): boolean {
  const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  return r.status === 0;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no free port'))));
    });
  });
}

/** Resolves true once `url` answers PING, false after `timeoutMs`. */
export async function pingRedis(url: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: Math.max(100, timeoutMs) });
    c.on('error', () => undefined);
    try {
      await c.connect();
      if ((await c.ping()) === 'PONG') return true;
    } catch {
      // not up (yet)
    } finally {
      c.disconnect();
    }
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A throwaway redis-server the demo owns: loopback only, no persistence, a temporary dir.
 * Stopped by PID; `restart()` keeps the port (the chaos scenario restarts it mid-run).
 */
export class OwnedRedis {
  readonly port: number;
  readonly #dir: string;
  #proc: ChildProcess | undefined;

  private constructor(port: number) {
    this.port = port;
    this.#dir = mkdtempSync(join(tmpdir(), 'cachebus-demo-redis-'));
  }

  static async start(): Promise<OwnedRedis> {
    const r = new OwnedRedis(await freePort());
    await r.#start();
    return r;
  }

  get url(): string { return `redis://127.0.0.1:${this.port}`; }
  get pid(): number | undefined { return this.#proc?.pid; }

  async #start(): Promise<void> {
    const proc = spawn('redis-server', [
      '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', this.#dir, '--daemonize', 'no', '--loglevel', 'warning',
    ], { stdio: 'ignore' });
    proc.on('error', () => undefined);
    this.#proc = proc;
    if (!(await pingRedis(this.url, 10_000))) {
      await this.stop();
      throw new Error(`redis-server did not start on port ${this.port}`);
    }
  }

  /** SIGKILL (no save, no goodbye), then waits for the process to be gone. */
  async stop(): Promise<void> {
    const proc = this.#proc;
    this.#proc = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
  }

  /** Kills the server and starts a new, empty one on the same port (a new run_id). */
  async restart(): Promise<void> {
    await this.stop();
    await this.#start();
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
