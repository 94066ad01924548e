import cluster from 'node:cluster';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClusterError, InvalidOptionError } from '../worker-runtime/index.js';
import { startCluster, type ClusterHandle } from '../worker-runtime/cluster/index.js';
import { until, waitForEvent } from './helpers/wait.js';

/** The compiled public API, imported by the worker module written below. */
const API = new URL('../dist/worker-runtime/cluster/index.js', import.meta.url).href;

/**
 * A cluster worker: reports ready with its pid, index and config; on `crash` exits with code 3;
 * its shutdown hook says `bye` (or hangs forever when config.hang).
 */
const WORKER = `
import { workerConfig, workerIndex, workerReady, onShutdown } from ${JSON.stringify(API)};
const config = workerConfig();
onShutdown(async () => {
  if (config.hang) await new Promise(() => {});
  process.send({ bye: workerIndex() });
});
if (config.crashOnStart) process.exit(4);
process.on('message', (m) => { if (m === 'crash') process.exit(3); if (m === 'echo') process.send({ echo: workerIndex() }); });
workerReady({ pid: process.pid, index: workerIndex(), config });
`;

let dir: string;
let exec: string;
let handle: ClusterHandle | undefined;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cachebus-cluster-'));
  exec = join(dir, 'worker.mjs');
  writeFileSync(exec, WORKER);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => {
  await handle?.stop();
  handle = undefined;
});

const start = async (extra: Parameters<typeof startCluster>[0] = {}): Promise<ClusterHandle> => {
  handle = await startCluster({ exec, execArgv: [], workers: 3, config: { greeting: 'hi' }, ...extra });
  return handle;
};

describe('startCluster', () => {
  it('forks N workers, each with its index and the config, and resolves once all are ready', async () => {
    const c = await start();
    const ws = c.workers;
    expect(ws).toHaveLength(3);
    expect(ws.map((w) => w?.index)).toEqual([0, 1, 2]);
    for (const w of ws) {
      expect(w?.ready).toBe(true);
      expect(w?.info).toEqual({ pid: w?.pid, index: w?.index, config: { greeting: 'hi' } });
    }
    expect(new Set(ws.map((w) => w?.pid)).size).toBe(3);
    const echo = new Promise<[number, unknown]>((resolve) => c.once('message', (i, m) => resolve([i, m])));
    expect(c.send(1, 'echo')).toBe(true);
    expect(await echo).toEqual([1, { echo: 1 }]);
  });

  it('restarts a crashed worker into the same slot, with its config, after a backoff', async () => {
    const c = await start({ restartDelayMs: 20 });
    const before = c.workers[1]!;
    const other = c.workers[0]!;
    const exit = waitForEvent<{ index: number; code: number; expected: boolean }>(c, 'exit');
    const restart = waitForEvent<{ index: number; attempt: number; delayMs: number }>(c, 'restart');
    const ready = waitForEvent<{ index: number; pid: number }>(c, 'ready', (w) => w.index === 1);
    c.send(1, 'crash');
    expect(await exit).toMatchObject({ index: 1, code: 3, expected: false });
    const r = await restart;
    expect(r).toMatchObject({ index: 1, attempt: 1 });
    expect(r.delayMs).toBeGreaterThanOrEqual(10);
    expect(r.delayMs).toBeLessThanOrEqual(20);
    const after = await ready;
    expect(after.pid).not.toBe(before.pid);
    expect(c.workers[1]).toMatchObject({ index: 1, restarts: 1, ready: true, info: { index: 1, config: { greeting: 'hi' } } });
    expect(c.workers[0]).toMatchObject({ pid: other.pid, restarts: 0 });
  });

  it('also restarts a worker killed with SIGKILL; consecutive crashes back off exponentially', async () => {
    const c = await start({ workers: 1, restartDelayMs: 20, restartMaxDelayMs: 1000 });
    const delays: number[] = [];
    c.on('restart', (r) => delays.push(r.delayMs));
    for (let i = 0; i < 3; i++) {
      const ready = waitForEvent<{ restarts: number }>(c, 'ready', (w) => w.restarts === i + 1);
      c.worker(0)!.process.kill('SIGKILL');
      await ready;
    }
    // Full jitter in [0.5, 1) of 20, 40, 80 ms: each range lies above the previous one's floor.
    expect(delays).toHaveLength(3);
    expect(delays[0]).toBeLessThanOrEqual(20);
    expect(delays[1]).toBeGreaterThanOrEqual(20);
    expect(delays[2]).toBeGreaterThanOrEqual(40);
  });

  it('stop() runs every worker\'s shutdown hooks, waits for the exits and restarts nothing; it is idempotent', async () => {
    const c = await start();
    const byes: unknown[] = [];
    const exits: { code: number | null; expected: boolean }[] = [];
    c.on('message', (_i, m) => byes.push(m));
    c.on('exit', (e) => exits.push(e));
    let restarts = 0;
    c.on('restart', () => restarts++);
    const first = c.stop();
    expect(c.stop()).toBe(first);
    await first;
    expect(byes).toEqual(expect.arrayContaining([{ bye: 0 }, { bye: 1 }, { bye: 2 }]));
    expect(exits).toHaveLength(3);
    for (const e of exits) expect(e).toMatchObject({ code: 0, expected: true });
    expect(restarts).toBe(0);
    expect(c.workers.every((w) => w === undefined)).toBe(true);
  });

  it('SIGKILLs a worker whose shutdown hook does not finish within shutdownTimeoutMs', async () => {
    const c = await start({ workers: 1, config: { hang: true }, shutdownTimeoutMs: 300 });
    const exit = waitForEvent<{ signal: string | null; expected: boolean }>(c, 'exit');
    await c.stop();
    expect(await exit).toMatchObject({ signal: 'SIGKILL', expected: true });
  });

  it('rejects with ClusterError when a worker never becomes ready, and leaves nothing running', async () => {
    const err = await startCluster({ exec, execArgv: [], workers: 1, config: { crashOnStart: true }, readyTimeoutMs: 500, restartDelayMs: 10 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClusterError);
    expect((err as ClusterError).code).toBe('E_CLUSTER');
    expect((err as Error).message).toMatch(/options\.readyTimeoutMs/);
    await until(() => Object.keys(cluster.workers ?? {}).length === 0, 5_000, 'no worker left');
  });

  it('validates its options, naming the option', async () => {
    await expect(startCluster({ exec, workers: 0 })).rejects.toThrow(InvalidOptionError);
    await expect(startCluster({ exec, workers: 0 })).rejects.toThrow(/options\.workers/);
    await expect(startCluster({ exec, workers: 1, shutdownTimeoutMs: -1 })).rejects.toThrow(/options\.shutdownTimeoutMs/);
  });
});
