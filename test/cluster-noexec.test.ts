import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePortRun } from './helpers/redis.js';

const run = promisify(execFile);

/** The compiled public API, imported by the script written below. */
const API = new URL('../dist/worker-runtime/cluster/index.js', import.meta.url).href;
const METRICS = new URL('../dist/worker-runtime/metrics/entry.js', import.meta.url).href;

/**
 * One script that is both the primary and its workers, as docs/cluster-and-threads.md shows:
 * startCluster({ workers }) without `exec`, so node:cluster forks this same file. The primary
 * prints one JSON line with what it saw, then stops the cluster.
 *   mode "hello":     workers report their index and metrics label
 *   mode "same-port": every worker calls serveMetrics on the same port
 *   mode "own-port":  every worker serves on port + workerIndex(); the primary scrapes each port
 *                     several times, kills slot 0, and scrapes it again after the restart (unless
 *                     a worker could not serve: then it prints what the workers said)
 */
const SCRIPT = `
import cluster from 'node:cluster';
import { startCluster, workerConfig, workerIndex, workerReady, onShutdown } from ${JSON.stringify(API)};
import { serveMetrics, defaultWorkerLabel } from ${JSON.stringify(METRICS)};

if (cluster.isPrimary) {
  const [mode, port] = [process.argv[2], Number(process.argv[3])];
  const handle = await startCluster({ workers: 2, config: { mode, port }, restartDelayMs: 10 });
  const out = { workers: handle.workers.map((w) => w.info) };
  if (mode === 'own-port' && !out.workers.some((w) => w.error !== undefined)) {
    const scrape = async (p) => (await (await fetch('http://127.0.0.1:' + p + '/metrics')).text()).trim();
    out.scrapes = [];
    for (let i = 0; i < 4; i++) out.scrapes.push([await scrape(port), await scrape(port + 1)]);
    const restarted = new Promise((r) => handle.on('ready', (w) => { if (w.index === 0) r(w); }));
    handle.worker(0).process.kill('SIGKILL');
    await restarted;
    out.afterRestart = await scrape(port);
  }
  console.log(JSON.stringify(out));
  await handle.stop();
} else {
  const { mode, port } = workerConfig();
  const info = { index: workerIndex(), label: defaultWorkerLabel() };
  if (mode !== 'hello') {
    const source = { contentType: 'text/plain', metrics: async () => defaultWorkerLabel() + ' pid=' + process.pid };
    try {
      const server = await serveMetrics(source, { port: mode === 'own-port' ? port + workerIndex() : port });
      onShutdown(() => server.close());
      info.served = server.port;
    } catch (err) {
      info.error = err.message;
    }
  }
  workerReady(info);
}
`;

let dir: string;
let script: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cachebus-noexec-'));
  script = join(dir, 'server.mjs');
  writeFileSync(script, SCRIPT);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Info { index: number; label: string; served?: number; error?: string }
async function primary(mode: string, port = 0): Promise<{ workers: Info[]; scrapes?: string[][]; afterRestart?: string }> {
  const { stdout } = await run('node', [script, mode, String(port)], { timeout: 30_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

describe('startCluster without exec (docs/cluster-and-threads.md)', () => {
  it('forks the primary\'s own script; each worker\'s metrics label is its slot', async () => {
    const out = await primary('hello');
    expect(out.workers).toEqual([
      { index: 0, label: `${hostname()}:w0` },
      { index: 1, label: `${hostname()}:w1` },
    ]);
  });
});

describe('serveMetrics in cluster workers', () => {
  it('two workers on the same port: one serves, the other fails with a message saying what to do (no shared port)', async () => {
    const port = await freePortRun(1);
    const out = await primary('same-port', port);
    const served = out.workers.filter((w) => w.served === port);
    const failed = out.workers.filter((w) => w.error !== undefined);
    expect(served).toHaveLength(1);
    expect(failed).toHaveLength(1);
    expect(failed[0]!.error).toMatch(/EADDRINUSE.*each worker needs its own metrics port.*serveClusterMetrics/);
  });

  it('each worker on port + workerIndex(): every scrape of a port answers the same worker, and the label survives a restart', async () => {
    // Two consecutive ports, free when picked, below the ephemeral range. Another process may
    // still take one before a worker binds it (EADDRINUSE): that run says so, and a new pair is tried.
    let out = await primary('own-port', await freePortRun(2));
    for (let retry = 0; retry < 3 && out.workers.some((w) => /EADDRINUSE/.test(w.error ?? '')); retry++) {
      out = await primary('own-port', await freePortRun(2));
    }
    expect(out.workers.filter((w) => w.error !== undefined)).toEqual([]);
    const labels = out.scrapes!.map(([a, b]) => [a!.split(' ')[0], b!.split(' ')[0]]);
    expect(new Set(out.scrapes!.map(([a]) => a)).size).toBe(1); // same pid every time on port
    expect(new Set(out.scrapes!.map(([, b]) => b)).size).toBe(1);
    expect(labels[0]).toEqual([`${hostname()}:w0`, `${hostname()}:w1`]);
    expect(out.afterRestart!.split(' ')[0]).toBe(`${hostname()}:w0`);
    expect(out.afterRestart).not.toBe(out.scrapes![0]![0]); // a new process (pid) behind the same label
  });
});
