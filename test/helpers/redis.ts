import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { unlinkMatching } from '../../bus/scan.js';
import { until } from './wait.js';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A random key prefix per test, so tests never clash with each other or other data. */
export function randomPrefix(): string {
  return `cbtest-${randomBytes(5).toString('hex')}`;
}

/** Deletes every key under the prefix (SCAN + UNLINK; never FLUSHALL). */
export async function cleanupPrefix(prefix: string, url = REDIS_URL): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    await unlinkMatching(r, `${prefix}*`);
  } finally {
    r.disconnect();
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Whether a loopback TCP port can be listened on now. */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/**
 * The first of `n` consecutive loopback ports, each free when checked, below Linux's ephemeral
 * range (32768 and up by default). `freePort` picks in that range, where every server of the
 * tests that listens on port 0 lands too: a port next to a free one, or one freed and bound again
 * later (a server restarted on it), may be taken there at any moment. Below it, only an explicit
 * bind takes a port.
 */
export async function freePortRun(n: number): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (12_000 - n));
    let free = true;
    for (let i = 0; i < n && free; i++) free = await canListen(base + i);
    if (free) return base;
  }
  throw new Error(`no ${n} consecutive free loopback ports found in 20000-31999`);
}

/** A redis-server owned by one test, on a free loopback port, stopped by PID. */
export class TestRedis {
  readonly port: number;
  readonly dir: string;
  #proc: ChildProcess | undefined;

  private constructor(port: number) {
    this.port = port;
    this.dir = mkdtempSync(join(tmpdir(), 'cachebus-redis-'));
  }

  static async start(extraArgs: string[] = []): Promise<TestRedis> {
    const r = new TestRedis(await freePort());
    await r.start(extraArgs);
    return r;
  }

  get url(): string { return `redis://127.0.0.1:${this.port}`; }
  get pid(): number | undefined { return this.#proc?.pid; }

  async start(extraArgs: string[] = []): Promise<void> {
    const proc = spawn('redis-server', [
      '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', this.dir, '--daemonize', 'no', ...extraArgs,
    ], { stdio: 'ignore' });
    this.#proc = proc;
    await until(async () => {
      const c = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      c.on('error', () => undefined);
      try {
        await c.connect();
        return (await c.ping()) === 'PONG';
      } finally {
        c.disconnect();
      }
    }, 10_000, `redis-server on port ${this.port}`);
  }

  /** SIGKILL, then wait for the process to be gone. */
  async stop(): Promise<void> {
    const proc = this.#proc;
    this.#proc = undefined;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
