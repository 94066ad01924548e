/**
 * Scale benchmarks (docs/scaling.md). Run after `npm run build`:
 *
 *   node dist/bench/scale.js workers [--readers 200] [--processes 4] [--rate 1000] [--seconds 10] [--mode direct|relay|both]
 *     N simulated workers (lightweight readers, a few per process) on one namespace at a paced
 *     invalidation rate: lag p50/p99/max, lost entries, gaps, Redis connections and Redis CPU.
 *     `direct`: one StreamReader (one blocking connection) per worker; `relay`: one hub per
 *     process fanning out over BroadcastChannel to its simulated workers.
 *   node dist/bench/scale.js cluster [--seconds 5] [--publishers 2] [--namespaces 48] [--runs 1]
 *     Bus throughput (XADD entries/s over many namespaces) on a 1-master vs a 3-master Redis
 *     Cluster started on free loopback ports.
 *
 * Each run starts its own redis-server(s) on free loopback ports (nothing shared is touched).
 * test/scale.test.ts runs a short `workers` run as the CI variant.
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Cluster, Redis } from 'ioredis';
import { busKeys } from '../bus/keys.js';
import { defaultProofEveryMs, StreamReader, type ReaderHandlers } from '../bus/reader.js';
import { startRelayHub } from '../bus/relay/hub.js';
import { encode } from '../bus/wire.js';
import { RelayClient } from '../worker-runtime/relay-client.js';
import { TestRedis } from '../test/helpers/redis.js';
import { TestCluster } from '../test/helpers/redis-cluster.js';

const SELF = fileURLToPath(import.meta.url);
/** The compiled script the children run (tests import this module from its TypeScript source). */
const SCRIPT = SELF.endsWith('.ts') ? fileURLToPath(new URL('../dist/bench/scale.js', import.meta.url)) : SELF;
const hostMs = (): number => Number(process.hrtime.bigint()) / 1e6;
const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** CPU seconds (user + sys) Redis reports in INFO cpu. */
export async function redisCpuSeconds(r: Redis): Promise<number> {
  const text = await r.info('cpu');
  let s = 0;
  for (const f of ['used_cpu_sys', 'used_cpu_user']) s += Number(new RegExp(`${f}:([\\d.]+)`).exec(text)?.[1] ?? 0);
  return s;
}

export async function connectedClients(r: Redis): Promise<number> {
  return Number(/connected_clients:(\d+)/.exec(await r.info('clients'))?.[1] ?? NaN);
}

// ---- workers: N simulated workers on one namespace ------------------------------------------

export interface ScaleOptions {
  readonly redisUrl: string;
  readonly prefix: string;
  readonly namespace: string;
  /** Simulated workers in total. */
  readonly readers: number;
  /** Processes they are spread over. */
  readonly processes: number;
  /** Invalidations (one stream entry each) per second. */
  readonly rate: number;
  readonly durationMs: number;
  readonly mode: 'direct' | 'relay';
  /** The staleness bound the workers would run with: a lag above it is a miss. @defaultValue 10_000 */
  readonly maxStaleMs?: number;
}

export interface ScaleResult {
  readonly mode: 'direct' | 'relay';
  readonly readers: number;
  readonly processes: number;
  readonly rate: number;
  readonly seconds: number;
  readonly published: number;
  /** Entries every simulated worker should have received, and how many did not arrive. */
  readonly expected: number;
  readonly missing: number;
  readonly gaps: number;
  readonly lagMs: { readonly p50: number; readonly p99: number; readonly max: number };
  readonly maxStaleMs: number;
  readonly withinBound: boolean;
  /** connected_clients during the run (includes the publisher and the bench's INFO connection). */
  readonly redisConnections: number;
  /** Redis CPU over the run, % of one core (INFO cpu delta / wall time). */
  readonly redisCpuPercent: number;
  /** The reader processes' CPU, % of one core, summed. */
  readonly readersCpuPercent: number;
}

interface ReaderChildOptions {
  redisUrl: string; prefix: string; namespace: string; readers: number; mode: 'direct' | 'relay'; maxStaleMs: number;
}
interface ReaderChildResult { delivered: number[]; lags: Float64Array; gaps: number; cpuMs: number }

/** Child role: K simulated workers; records lag per entry from the host clock stamp in the key. */
async function readerChild(o: ReaderChildOptions): Promise<void> {
  const stream = busKeys(o.prefix, o.namespace).stream;
  const delivered: number[] = new Array<number>(o.readers).fill(0);
  let lags = new Float64Array(1 << 16);
  let nLags = 0;
  let gaps = 0;
  const handlers = (i: number): ReaderHandlers => ({
    onEntry: (e) => {
      delivered[i]!++;
      const now = hostMs();
      for (const k of e.keys) {
        if (nLags === lags.length) { const bigger = new Float64Array(lags.length * 2); bigger.set(lags); lags = bigger; }
        lags[nLags++] = now - Number(k.slice(2));
      }
    },
    onGap: () => { gaps++; },
    onBadEntry: () => undefined,
    onStatus: () => undefined,
    onCaughtUp: () => undefined,
    onError: () => undefined,
  });
  process.once('disconnect', () => process.exit(1)); // the parent is gone
  const closers: (() => unknown)[] = [];
  const blockMs = Math.min(2000, Math.floor(o.maxStaleMs / 4));
  if (o.mode === 'direct') {
    for (let i = 0; i < o.readers; i++) {
      const conn = new Redis(o.redisUrl, { connectionName: `cachebus:${o.namespace}:reader`, maxRetriesPerRequest: null, autoResendUnfulfilledCommands: false });
      const r = new StreamReader(conn, { stream, origin: 'sim', blockMs, count: 1000, maxEntryBytes: 65_536, proofEveryMs: defaultProofEveryMs(blockMs) }, handlers(i));
      await r.start();
      closers.push(() => r.close());
    }
  } else {
    const hub = startRelayHub({ redis: o.redisUrl, ipc: false, advertise: false, blockMs });
    for (let i = 0; i < o.readers; i++) {
      const c = await RelayClient.open('broadcast', { prefix: o.prefix, namespace: o.namespace, origin: () => 'sim', maxStaleMs: o.maxStaleMs, connectTimeoutMs: 10_000, auto: false }, handlers(i));
      closers.push(() => c!.close());
    }
    closers.push(() => hub.close());
  }
  const cpu0 = process.cpuUsage();
  process.on('message', (m: { finish?: number }) => {
    if (m.finish === undefined) return;
    const published = m.finish;
    void (async () => {
      const deadline = Date.now() + 20_000;
      while (delivered.some((d) => d < published) && Date.now() < deadline) await tick(5);
      const cpu = process.cpuUsage(cpu0);
      const result: ReaderChildResult = { delivered, lags: lags.slice(0, nLags), gaps, cpuMs: (cpu.user + cpu.system) / 1000 };
      await new Promise<void>((r) => process.send!(result, undefined, undefined, () => r())); // flushed before exit
      for (const c of closers) await c();
      process.exit(0);
    })();
  });
  process.send!({ ready: true });
}

function forkRole(role: string, arg: object): ChildProcess {
  return fork(SCRIPT, [role, JSON.stringify(arg)], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

function nextMessage<T>(child: ChildProcess, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('child did not answer')), timeoutMs);
    child.once('message', (m) => { clearTimeout(timer); resolve(m as T); });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`child exited with ${code}`)); });
  });
}

/** One `workers` run against an existing Redis. */
export async function runScale(o: ScaleOptions): Promise<ScaleResult> {
  const maxStaleMs = o.maxStaleMs ?? 10_000;
  const stream = busKeys(o.prefix, o.namespace).stream;
  const per = Array.from({ length: o.processes }, (_, i) => Math.floor(o.readers / o.processes) + (i < o.readers % o.processes ? 1 : 0));
  const children = per.map((readers) => forkRole('reader', { redisUrl: o.redisUrl, prefix: o.prefix, namespace: o.namespace, readers, mode: o.mode, maxStaleMs } satisfies ReaderChildOptions));
  const info = new Redis(o.redisUrl);
  const pub = new Redis(o.redisUrl);
  try {
    await Promise.all(children.map((c) => nextMessage(c, 60_000)));
    const cpu0 = await redisCpuSeconds(info);
    const t0 = hostMs();
    let published = 0;
    let connections = NaN;
    for (;;) {
      const elapsed = hostMs() - t0;
      if (elapsed >= o.durationMs) break;
      if (Number.isNaN(connections) && elapsed >= o.durationMs / 2) connections = await connectedClients(info);
      const due = Math.floor((o.rate * elapsed) / 1000) - published;
      if (due > 0) {
        const p = pub.pipeline();
        for (let i = 0; i < due; i++) {
          const [fields] = encode({ keys: [`s:${hostMs().toFixed(3)}`], tags: [], clear: false }, { origin: 'bench-publisher', time: Date.now(), maxEntryBytes: 65_536 });
          p.xadd(stream, 'MAXLEN', '~', 1_000_000, '*', ...fields!);
        }
        await p.exec();
        published += due;
      }
      await tick(2);
    }
    const wallS = (hostMs() - t0) / 1000;
    const results = await Promise.all(children.map((c) => {
      const r = nextMessage<ReaderChildResult>(c, 60_000);
      c.send({ finish: published });
      return r;
    }));
    const cpu1 = await redisCpuSeconds(info);
    const all = new Float64Array(results.reduce((n, r) => n + r.lags.length, 0));
    let off = 0;
    for (const r of results) { all.set(r.lags, off); off += r.lags.length; }
    all.sort();
    const delivered = results.flatMap((r) => r.delivered);
    const missing = delivered.reduce((n, d) => n + Math.max(0, published - d), 0);
    const lagMs = { p50: percentile(all, 50), p99: percentile(all, 99), max: all.length ? all[all.length - 1]! : NaN };
    return {
      mode: o.mode, readers: o.readers, processes: o.processes, rate: o.rate, seconds: wallS, published,
      expected: published * o.readers, missing, gaps: results.reduce((n, r) => n + r.gaps, 0),
      lagMs, maxStaleMs, withinBound: missing === 0 && lagMs.max < maxStaleMs,
      redisConnections: connections,
      redisCpuPercent: ((cpu1 - cpu0) / wallS) * 100,
      readersCpuPercent: (results.reduce((n, r) => n + r.cpuMs, 0) / 1000 / wallS) * 100,
    };
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    info.disconnect();
    pub.disconnect();
  }
}

export function formatScale(r: ScaleResult): string {
  const f = (n: number, d = 1): string => (Number.isFinite(n) ? n.toFixed(d) : String(n));
  return `${r.mode.padEnd(6)} ${r.readers} workers / ${r.processes} procs @ ${r.rate}/s for ${f(r.seconds)} s: ` +
    `lag p50 ${f(r.lagMs.p50, 2)} ms, p99 ${f(r.lagMs.p99, 2)} ms, max ${f(r.lagMs.max, 1)} ms; ` +
    `missing ${r.missing}/${r.expected}, gaps ${r.gaps}; Redis ${r.redisConnections} connections, CPU ${f(r.redisCpuPercent)} %; ` +
    `reader procs CPU ${f(r.readersCpuPercent)} %; within ${r.maxStaleMs} ms bound: ${r.withinBound}`;
}

// ---- cluster: bus throughput on 1 vs 3 masters ----------------------------------------------

interface PublisherOptions { seeds: string[]; prefix: string; namespaces: string[]; seconds: number; pipeline: number; inFlight: number }

/** Child role: XADD as fast as it can, pipelines of one namespace each, several in flight. */
async function publisherChild(o: PublisherOptions): Promise<void> {
  process.once('disconnect', () => process.exit(1)); // the parent is gone
  const c = new Cluster(o.seeds.map((s) => { const u = new URL(s); return { host: u.hostname, port: Number(u.port) }; }), { slotsRefreshTimeout: 10_000 });
  c.on('error', () => undefined);
  const streams = o.namespaces.map((ns) => busKeys(o.prefix, ns).stream);
  const [fields] = encode({ keys: ['some:key:1'], tags: [], clear: false }, { origin: 'bench', time: Date.now(), maxEntryBytes: 65_536 });
  await c.ping();
  process.send!({ ready: true });
  await new Promise<void>((r) => process.once('message', () => r()));
  const end = hostMs() + o.seconds * 1000;
  const cpu0 = process.cpuUsage();
  let done = 0;
  let n = 0;
  const lane = async (): Promise<void> => {
    while (hostMs() < end) {
      const stream = streams[n++ % streams.length]!;
      const p = c.pipeline();
      for (let i = 0; i < o.pipeline; i++) p.xadd(stream, 'MAXLEN', '~', 10_000, '*', ...fields!);
      await p.exec();
      done += o.pipeline;
    }
  };
  await Promise.all(Array.from({ length: o.inFlight }, lane));
  const cpu = process.cpuUsage(cpu0);
  await new Promise<void>((r) => process.send!({ done, cpuMs: (cpu.user + cpu.system) / 1000 }, undefined, undefined, () => r()));
  c.disconnect();
  process.exit(0);
}

export interface ClusterThroughput {
  masters: number;
  /** XADD entries/s from Node publishers (ioredis Cluster, pipelines of 50): client-bound on a small host. */
  entriesPerSecond: number;
  redisCpuPercent: number;
  /** CPU of the busiest master, % of one core: the headroom left per node at this load. */
  busiestMasterCpuPercent: number;
  publishersCpuPercent: number;
  /** XADD/s from redis-benchmark --cluster (C client, keys hash-tagged per node): server-bound. */
  redisBenchmark: number;
}

/**
 * redis-benchmark --cluster: `{tag}` in the key is replaced by a tag of each master's slots.
 * It refuses a 1-node cluster, which owns every slot anyway: then it runs plain.
 */
function redisBenchmarkXadd(port: number, requests: number, masters: number): number {
  const r = spawnSync('redis-benchmark', [...(masters > 1 ? ['--cluster'] : []), '-h', '127.0.0.1', '-p', String(port), '-n', String(requests), '-c', '48', '-P', '16',
    '--threads', '2', '-q', 'XADD', 'bench:{tag}:inval', 'MAXLEN', '~', '10000', '*', 'v', '1', 'k', '["some:key:1"]'], { encoding: 'utf8', timeout: 120_000 });
  const m = /([\d.]+) requests per second/.exec(`${r.stdout}`.split('\r').pop() ?? '');
  return m ? Number(m[1]) : NaN;
}

export async function runClusterThroughput(masters: number, o: { seconds: number; publishers: number; namespaces: number }): Promise<ClusterThroughput> {
  const cluster = await TestCluster.start({ masters });
  const kids: ChildProcess[] = [];
  try {
    const namespaces = Array.from({ length: o.namespaces }, (_, i) => `ns${i}`);
    const prefix = 'bench';
    kids.push(...Array.from({ length: o.publishers }, () => forkRole('publisher', { seeds: cluster.seeds, prefix, namespaces, seconds: o.seconds, pipeline: 50, inFlight: 8 } satisfies PublisherOptions)));
    await Promise.all(kids.map((k) => nextMessage(k, 30_000)));
    const perNode = async (): Promise<number[]> => Promise.all(cluster.nodes.map(async (n) => {
      const text = String(await cluster.call(n.port, 'INFO', 'cpu'));
      return ['used_cpu_sys', 'used_cpu_user'].reduce((x, f) => x + Number(new RegExp(`${f}:([\\d.]+)`).exec(text)?.[1] ?? 0), 0);
    }));
    const node0 = await perNode();
    const cpu0 = await cluster.cpuSeconds();
    const t0 = hostMs();
    const results = await Promise.all(kids.map((k) => { const r = nextMessage<{ done: number; cpuMs: number }>(k, o.seconds * 1000 + 30_000); k.send({ go: true }); return r; }));
    const wallS = (hostMs() - t0) / 1000;
    const cpu1 = await cluster.cpuSeconds();
    const node1 = await perNode();
    for (const k of kids) if (k.exitCode === null) k.kill('SIGKILL');
    return {
      masters,
      redisBenchmark: redisBenchmarkXadd(cluster.nodes[0]!.port, 2_000_000, masters),
      entriesPerSecond: results.reduce((n, r) => n + r.done, 0) / o.seconds,
      redisCpuPercent: ((cpu1 - cpu0) / wallS) * 100,
      busiestMasterCpuPercent: Math.max(...node1.map((c, i) => ((c - node0[i]!) / wallS) * 100)),
      publishersCpuPercent: (results.reduce((n, r) => n + r.cpuMs, 0) / 1000 / wallS) * 100,
    };
  } finally {
    for (const k of kids) if (k.exitCode === null) k.kill('SIGKILL');
    await cluster.dispose();
  }
}

// ---- command line ---------------------------------------------------------------------------

function flag(argv: string[], name: string, def: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : def;
}

async function main(argv: string[]): Promise<void> {
  const [cmd] = argv;
  if (cmd === 'reader') return readerChild(JSON.parse(argv[1]!) as ReaderChildOptions);
  if (cmd === 'publisher') return publisherChild(JSON.parse(argv[1]!) as PublisherOptions);
  if (cmd === 'workers') {
    const modes = flag(argv, 'mode', 'both') === 'both' ? (['direct', 'relay'] as const) : [flag(argv, 'mode', 'direct') as 'direct' | 'relay'];
    const redis = await TestRedis.start();
    try {
      for (const mode of modes) {
        const r = await runScale({
          redisUrl: redis.url, prefix: 'bench', namespace: `scale-${mode}`, mode,
          readers: Number(flag(argv, 'readers', '200')), processes: Number(flag(argv, 'processes', '4')),
          rate: Number(flag(argv, 'rate', '1000')), durationMs: Number(flag(argv, 'seconds', '10')) * 1000,
        });
        console.log(formatScale(r));
      }
    } finally {
      await redis.dispose();
    }
    return;
  }
  if (cmd === 'cluster') {
    const o = { seconds: Number(flag(argv, 'seconds', '5')), publishers: Number(flag(argv, 'publishers', '2')), namespaces: Number(flag(argv, 'namespaces', '48')) };
    const rows: ClusterThroughput[] = [];
    const runs = Number(flag(argv, 'runs', '1'));
    for (let run = 0; run < runs; run++) for (const masters of [1, 3]) {
      const r = await runClusterThroughput(masters, o);
      rows.push(r);
      console.log(`${masters} master(s): ${Math.round(r.entriesPerSecond)} entries/s over ${o.namespaces} namespaces, ` +
        `Redis CPU ${r.redisCpuPercent.toFixed(0)} % (all nodes), busiest master ${r.busiestMasterCpuPercent.toFixed(0)} %, publishers CPU ${r.publishersCpuPercent.toFixed(0)} %; ` +
        `redis-benchmark --cluster XADD: ${Math.round(r.redisBenchmark)} /s`);
    }
    const med = (m: number, f: (r: ClusterThroughput) => number): number => {
      const xs = rows.filter((r) => r.masters === m).map(f).sort((a, b) => a - b);
      return xs[Math.floor(xs.length / 2)]!;
    };
    console.log(`medians of ${runs} run(s), 3 vs 1 master(s): Node publishers ${(med(3, (r) => r.entriesPerSecond) / med(1, (r) => r.entriesPerSecond)).toFixed(2)}x, ` +
      `redis-benchmark ${(med(3, (r) => r.redisBenchmark) / med(1, (r) => r.redisBenchmark)).toFixed(2)}x`);
    return;
  }
  console.error('usage: node dist/bench/scale.js workers|cluster [options]   (see the header of bench/scale.ts)');
  process.exitCode = 2;
}

if (process.argv[1] && SELF === resolve(process.argv[1])) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
