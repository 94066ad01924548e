/**
 * Relay mode vs one reader per worker (docs/scaling.md). Run after `npm run build`:
 *
 *   node dist/bench/relay.js [--workers 2,8,32] [--rate 500] [--seconds 5] [--transport cluster|threads]
 *
 * For each worker count, twice in the same run: `direct` (every worker's cache has its own
 * blocking Redis reader) and `relay` (a hub in the primary reads once and fans out over IPC —
 * or BroadcastChannel with `--transport threads`). A publisher process calls
 * `cache.invalidate()` at `--rate` per second; each worker reports when the invalidation was
 * applied (`received` event). Reported: latency p50/p99/max from invalidate() to applied,
 * over every (worker, entry) pair; CPU of workers + primary (hub) and of Redis, in % of one
 * core; Redis connections. Redis is a redis-server of its own on a free loopback port.
 */
import cluster from 'node:cluster';
import { fork, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Redis } from 'ioredis';
import { startRelayHub, type RelayHub } from '../bus/relay/hub.js';
import { createCache } from '../worker-runtime/index.js';
import { TestRedis } from '../test/helpers/redis.js';
import { connectedClients, percentile, redisCpuSeconds } from './scale.js';

const SELF = fileURLToPath(import.meta.url);
const hostMs = (): number => Number(process.hrtime.bigint()) / 1e6;
const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface WorkerCfg { redisUrl: string; prefix: string; namespace: string; relay: 'auto' | false }
type ToWorker = { go: true } | { finish: number };
type FromWorker = { ready: true; relayMode: string | false } | { done: true; recv: [string, number][]; cpuMs: number };

/** Worker role (node:cluster worker or worker thread): one cache; records when each entry was applied. */
async function workerMain(cfg: WorkerCfg, send: (m: FromWorker) => void, on: (fn: (m: ToWorker) => void) => void): Promise<void> {
  const cache = await createCache<{}>({ redis: cfg.redisUrl, namespace: cfg.namespace, prefix: cfg.prefix, maxEntries: 10_000, relay: cfg.relay });
  const recv: [string, number][] = [];
  cache.on('received', (e) => { recv.push([e.id, hostMs()]); });
  let cpu0 = process.cpuUsage();
  on((m) => {
    if ('go' in m) { cpu0 = process.cpuUsage(); return; }
    void (async () => {
      const deadline = Date.now() + 20_000;
      while (recv.length < m.finish && Date.now() < deadline) await tick(5);
      const cpu = process.cpuUsage(cpu0);
      send({ done: true, recv, cpuMs: (cpu.user + cpu.system) / 1000 });
      await cache.close();
    })();
  });
  send({ ready: true, relayMode: cache.relayMode });
}

/** Publisher role (a child process): invalidate() at a paced rate; reports entry id → start time. */
async function publisherMain(cfg: WorkerCfg & { rate: number; seconds: number }): Promise<void> {
  process.once('disconnect', () => process.exit(1)); // the parent is gone
  const cache = await createCache<{}>({ redis: cfg.redisUrl, namespace: cfg.namespace, prefix: cfg.prefix, maxEntries: 10, relay: false });
  process.send!({ ready: true });
  await new Promise<void>((r) => process.once('message', () => r()));
  const sent: [string, number][] = [];
  const t0 = hostMs();
  let n = 0;
  while (hostMs() - t0 < cfg.seconds * 1000) {
    const due = Math.floor((cfg.rate * (hostMs() - t0)) / 1000) - n;
    for (let i = 0; i < due; i++) {
      const at = hostMs();
      const id = cache.bus!.publish({ keys: [`k${n}`] }); // one entry per call: awaited before the next
      const [first] = await id;
      sent.push([first!, at]);
      n++;
    }
    await tick(1);
  }
  await new Promise<void>((r) => process.send!({ sent }, undefined, undefined, () => r()));
  await cache.close();
  process.exit(0);
}

interface RunResult {
  workers: number; mode: 'direct' | 'relay'; transport: string; relayModes: string[];
  p50: number; p99: number; max: number; samples: number; lost: number;
  hostCpuPercent: number; redisCpuPercent: number; redisConnections: number;
  /** Invalidations/s the publisher achieved (below --rate when the host is saturated). */
  achievedRate: number;
  /** Host (workers + primary) and Redis CPU per delivered (worker, entry) pair, µs. */
  hostUsPerDelivery: number; redisUsPerDelivery: number;
}

async function runOne(redis: TestRedis, n: number, mode: 'direct' | 'relay', transport: 'cluster' | 'threads', rate: number, seconds: number): Promise<RunResult> {
  const cfg: WorkerCfg = { redisUrl: redis.url, prefix: 'bench', namespace: `relay-${mode}-${n}-${transport}`, relay: mode === 'relay' ? 'auto' : false };
  let hub: RelayHub | undefined;
  // minWorkers 0: measure the relay itself at every count (the default advises direct reads below 4).
  if (mode === 'relay') hub = startRelayHub({ redis: redis.url, ipc: transport === 'cluster', broadcast: transport === 'threads', minWorkers: 0 });
  const info = new Redis(redis.url);
  const replies: ((m: FromWorker) => void)[] = [];
  const posts: ((m: ToWorker) => void)[] = [];
  const kills: (() => Promise<unknown>)[] = [];
  const inbox: FromWorker[][] = [];
  const waitFor = async (pred: (m: FromWorker) => boolean, what: string): Promise<FromWorker[]> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const got = inbox.map((box) => box.find(pred));
      if (got.every((m) => m !== undefined)) return got as FromWorker[];
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await tick(5);
    }
  };
  for (let i = 0; i < n; i++) {
    const box: FromWorker[] = [];
    inbox.push(box);
    replies.push((m) => box.push(m));
    if (transport === 'cluster') {
      cluster.setupPrimary({ exec: SELF, args: ['worker'] });
      const w = cluster.fork({ BENCH_RELAY_CFG: JSON.stringify(cfg) });
      w.on('message', (m: FromWorker) => { if (typeof m === 'object' && m && ('ready' in m || 'done' in m)) box.push(m); });
      posts.push((m) => w.send(m));
      kills.push(() => new Promise((r) => { if (w.isDead()) r(undefined); else { w.once('exit', r); w.process.kill('SIGKILL'); } }));
    } else {
      const t = new Worker(SELF, { workerData: cfg, argv: ['worker'] });
      t.on('message', (m: FromWorker) => box.push(m));
      posts.push((m) => t.postMessage(m));
      kills.push(() => t.terminate());
    }
  }
  const pub: ChildProcess = fork(SELF, ['publisher', JSON.stringify({ ...cfg, rate, seconds })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    const ready = await waitFor((m) => 'ready' in m, 'workers ready');
    await new Promise<void>((r, j) => { pub.once('message', () => r()); pub.once('exit', (c) => j(new Error(`publisher exited ${c}`))); });
    const redisCpu0 = await redisCpuSeconds(info);
    const host0 = process.cpuUsage();
    for (const p of posts) p({ go: true });
    const t0 = hostMs();
    const sentP = new Promise<[string, number][]>((r) => pub.once('message', (m: { sent: [string, number][] }) => r(m.sent)));
    pub.send({ go: true });
    await tick((seconds * 1000) / 2);
    const connections = (await connectedClients(info)) - 1; // minus this INFO connection
    const sent = await sentP;
    for (const p of posts) p({ finish: sent.length });
    const done = (await waitFor((m) => 'done' in m, 'workers done')) as Extract<FromWorker, { done: true }>[];
    const wallS = (hostMs() - t0) / 1000;
    const redisCpu1 = await redisCpuSeconds(info);
    const host = process.cpuUsage(host0);
    const start = new Map(sent);
    const lat: number[] = [];
    let lost = 0;
    for (const d of done) {
      const seen = new Set<string>();
      for (const [id, at] of d.recv) {
        const s = start.get(id);
        if (s !== undefined) { lat.push(at - s); seen.add(id); }
      }
      lost += sent.length - seen.size;
    }
    lat.sort((a, b) => a - b);
    const workersCpuMs = transport === 'cluster' ? done.reduce((x, d) => x + d.cpuMs, 0) : 0; // threads: inside the primary's figure
    const hostMsTotal = workersCpuMs + (host.user + host.system) / 1000;
    return {
      achievedRate: sent.length / seconds,
      hostUsPerDelivery: (hostMsTotal * 1000) / Math.max(1, lat.length),
      redisUsPerDelivery: ((redisCpu1 - redisCpu0) * 1e6) / Math.max(1, lat.length),
      workers: n, mode, transport, relayModes: [...new Set(ready.map((r) => String((r as { relayMode: string | false }).relayMode)))],
      p50: percentile(lat, 50), p99: percentile(lat, 99), max: lat[lat.length - 1] ?? NaN, samples: lat.length, lost,
      hostCpuPercent: (hostMsTotal / 1000 / wallS) * 100,
      redisCpuPercent: ((redisCpu1 - redisCpu0) / wallS) * 100,
      redisConnections: connections,
    };
  } finally {
    pub.kill('SIGKILL');
    await Promise.all(kills.map((k) => k()));
    await hub?.close();
    info.disconnect();
  }
}

function flag(argv: string[], name: string, def: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : def;
}

async function main(argv: string[]): Promise<void> {
  const counts = flag(argv, 'workers', '2,8,32').split(',').map(Number);
  const rate = Number(flag(argv, 'rate', '500'));
  const seconds = Number(flag(argv, 'seconds', '5'));
  const transport = flag(argv, 'transport', 'cluster') as 'cluster' | 'threads';
  const redis = await TestRedis.start();
  try {
    console.log(`relay vs direct, ${transport} workers, ${rate} invalidations/s for ${seconds} s each; latency = invalidate() → applied in another worker`);
    console.log('workers mode    via        rate/s  p50 ms  p99 ms  max ms  samples lost  host CPU %  Redis CPU %  host µs/dlv  Redis µs/dlv  Redis conns');
    for (const n of counts) {
      for (const mode of ['direct', 'relay'] as const) {
        const r = await runOne(redis, n, mode, transport, rate, seconds);
        console.log(`${String(n).padStart(7)} ${mode.padEnd(7)} ${r.relayModes.join('/').padEnd(9)} ${r.achievedRate.toFixed(0).padStart(7)} ${r.p50.toFixed(2).padStart(7)} ${r.p99.toFixed(2).padStart(7)} ` +
          `${r.max.toFixed(1).padStart(7)} ${String(r.samples).padStart(8)} ${String(r.lost).padStart(4)} ${r.hostCpuPercent.toFixed(0).padStart(11)} ` +
          `${r.redisCpuPercent.toFixed(0).padStart(12)} ${r.hostUsPerDelivery.toFixed(1).padStart(12)} ${r.redisUsPerDelivery.toFixed(1).padStart(13)} ${String(r.redisConnections).padStart(12)}`);
      }
    }
  } finally {
    await redis.dispose();
  }
}

const role = cluster.isWorker ? 'worker' : !isMainThread ? 'worker' : process.argv[2];
if (role === 'worker') {
  if (cluster.isWorker) {
    void workerMain(JSON.parse(process.env.BENCH_RELAY_CFG!) as WorkerCfg, (m) => process.send!(m), (fn) => process.on('message', (m: ToWorker) => { if (typeof m === 'object' && m && ('go' in m || 'finish' in m)) fn(m); }));
  } else {
    void workerMain(workerData as WorkerCfg, (m) => parentPort!.postMessage(m), (fn) => parentPort!.on('message', fn));
  }
} else if (role === 'publisher') {
  void publisherMain(JSON.parse(process.argv[3]!) as WorkerCfg & { rate: number; seconds: number });
} else if (process.argv[1] && SELF === resolve(process.argv[1])) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
