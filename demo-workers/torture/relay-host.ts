/**
 * The torture's relay hub host: a process of its own (so the nemesis can SIGSTOP the hub and
 * nothing else) that runs `startRelayHub()` and, as a node:cluster primary, one torture worker
 * whose main cache takes its invalidations from this hub over IPC (`relay: 'auto'` finds it).
 * The worker's piscina thread reads Redis itself (threads of a cluster worker cannot reach a
 * hub in the primary). Talks to the torture over IPC: `{ ready: { port, pid } }`,
 * `{ exit: { pid, code, signal, expected } }` and `{ stats }` (every second) up; `'stop'` down.
 * argv[2]: the worker's TortureWorkerConfig (its one Redis URL first).
 */
import { fileURLToPath } from 'node:url';
import { startCluster, startRelayHub } from '../../worker-runtime/cluster/index.js';
import type { TortureReady, TortureWorkerConfig } from './layout.js';

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));
const config = JSON.parse(process.argv[2] ?? '{}') as TortureWorkerConfig;
const send = (m: unknown): void => { if (process.connected) process.send?.(m); };

// An idle hub beats every blockMs; the cache says hello again when a beat is later than half
// its maxStaleMs: blockMs a quarter of it leaves room for a loaded machine (the hub refuses
// caches whose bound is below 2 × blockMs). minWorkers 0: relay this one worker instead of
// advising it to read Redis itself.
const hub = startRelayHub({ redis: config.redisUrls[0], minWorkers: 0, broadcast: false, blockMs: Math.max(50, Math.floor(config.maxStaleMs / 4)) });
hub.on('error', () => undefined);
hub.on('gap', (g) => console.log(`relay hub: gap on ${g.topic}: ${g.cause} ${g.detail}`));

const handle = await startCluster({
  exec: WORKER, workers: 1, config, readyTimeoutMs: 60_000, restartDelayMs: 100, restartMaxDelayMs: 1_000,
  execArgv: process.execArgv,
});
handle.on('error', (err) => console.error(`relay host cluster: ${String((err as Error)?.message ?? err)}`));
handle.on('ready', (w) => send({ ready: w.info as TortureReady }));
handle.on('exit', (e) => send({ exit: { pid: e.pid, code: e.code, signal: e.signal, expected: e.expected } }));
const first = handle.workers[0];
if (first?.ready) send({ ready: first.info as TortureReady });

// The torture prints what the hub did (proof that the relayed cache really read through it).
setInterval(() => send({ stats: hub.stats }), 1_000).unref();

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await handle.stop().catch(() => undefined);
  await hub.close().catch(() => undefined);
  process.exit(0);
};
process.on('message', (m) => { if (m === 'stop') void stop(); });
process.on('disconnect', () => void stop()); // the torture is gone: do not outlive it
