import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { freePort } from './redis.js';
import { until } from './wait.js';

/** One redis-server of a test cluster. */
export interface ClusterNode {
  readonly port: number;
  readonly busPort: number;
  readonly dir: string;
  proc: ChildProcess | undefined;
}

export interface TestClusterOptions {
  /** Masters. @defaultValue 3 */
  readonly masters?: number;
  /** Replicas per master (1 for failover tests). @defaultValue 0 */
  readonly replicas?: number;
  /** cluster-node-timeout, ms: how long before a silent master is failed over. @defaultValue 1000 */
  readonly nodeTimeoutMs?: number;
}

const run = (args: string[], timeout = 30_000): { ok: boolean; out: string } => {
  const r = spawnSync('redis-cli', args, { encoding: 'utf8', timeout });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
};

async function ping(port: number): Promise<Redis> {
  const c = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/**
 * A Redis Cluster owned by one test file: redis-server processes started with
 * `--cluster-enabled yes` on free loopback ports (client and cluster-bus ports both picked
 * free), joined with `redis-cli --cluster create ... --cluster-yes`, stopped by PID, data in
 * temp dirs removed on dispose. No persistence: a killed node comes back empty.
 */
export class TestCluster {
  readonly nodes: ClusterNode[] = [];
  readonly #nodeTimeoutMs: number;

  private constructor(nodeTimeoutMs: number) {
    this.#nodeTimeoutMs = nodeTimeoutMs;
  }

  /** Why a cluster cannot be started here, or undefined when it can (checks the binaries only). */
  static unsupported(): string | undefined {
    const server = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
    if (server.status !== 0) return `redis-server is not runnable (${server.error ? String(server.error) : server.stderr})`;
    const m = /v=(\d+)\./.exec(server.stdout);
    if (!m || Number(m[1]) < 7) return `redis-server ${server.stdout.trim()} is older than 7 (cluster-port needs 7.0)`;
    const cli = spawnSync('redis-cli', ['--version'], { encoding: 'utf8' });
    if (cli.status !== 0) return 'redis-cli is not runnable';
    return undefined;
  }

  static async start(opts: TestClusterOptions = {}): Promise<TestCluster> {
    const masters = opts.masters ?? 3;
    const replicas = opts.replicas ?? 0;
    const c = new TestCluster(opts.nodeTimeoutMs ?? 1000);
    try {
      const used = new Set<number>();
      const port = async (): Promise<number> => {
        for (;;) {
          const p = await freePort();
          if (!used.has(p)) { used.add(p); return p; }
        }
      };
      for (let i = 0; i < masters * (1 + replicas); i++) {
        c.nodes.push({ port: await port(), busPort: await port(), dir: mkdtempSync(join(tmpdir(), 'cachebus-cluster-')), proc: undefined });
      }
      await Promise.all(c.nodes.map((n) => c.#spawn(n)));
      // redis-cli --cluster create wants at least 3 masters; smaller clusters are built by hand.
      if (masters >= 3) {
        const r = run(['--cluster', 'create', ...c.nodes.map((n) => `127.0.0.1:${n.port}`),
          '--cluster-replicas', String(replicas), '--cluster-yes']);
        if (!r.ok) throw new Error(`redis-cli --cluster create failed: ${r.out}`);
      } else {
        await c.#assignManually(masters);
      }
      await c.waitHealthy();
    } catch (err) {
      await c.dispose();
      throw err;
    }
    return c;
  }

  /** redis-cli refuses fewer than 3 masters: assign the slots by hand (benchmarks compare 1 vs 3). */
  async #assignManually(masters: number): Promise<void> {
    const per = Math.ceil(16384 / masters);
    for (let i = 0; i < masters; i++) {
      const n = this.nodes[i]!;
      const from = i * per;
      const to = Math.min(16383, from + per - 1);
      const r = run(['-p', String(n.port), 'CLUSTER', 'ADDSLOTSRANGE', String(from), String(to)]);
      if (!r.ok || !r.out.includes('OK')) throw new Error(`CLUSTER ADDSLOTSRANGE on ${n.port}: ${r.out}`);
    }
    for (const n of this.nodes.slice(1)) run(['-p', String(n.port), 'CLUSTER', 'MEET', '127.0.0.1', String(this.nodes[0]!.port), String(this.nodes[0]!.busPort)]);
  }

  #spawn(n: ClusterNode): Promise<void> {
    n.proc = spawn('redis-server', [
      '--port', String(n.port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
      '--cluster-port', String(n.busPort), '--cluster-announce-ip', '127.0.0.1', '--cluster-config-file', join(n.dir, 'nodes.conf'),
      '--cluster-node-timeout', String(this.#nodeTimeoutMs), '--cluster-replica-validity-factor', '0',
      '--save', '', '--appendonly', 'no', '--dir', n.dir, '--daemonize', 'no',
    ], { stdio: 'ignore' });
    return until(async () => {
      const c = await ping(n.port);
      try { return (await c.ping()) === 'PONG'; } finally { c.disconnect(); }
    }, 10_000, `redis-server (cluster) on port ${n.port}`).then(() => undefined);
  }

  /** `redis://127.0.0.1:<port>` of every node, the seed list a client is given. */
  get seeds(): string[] { return this.nodes.map((n) => `redis://127.0.0.1:${n.port}`); }

  /** A plain ioredis Cluster client for assertions (the caller disconnects it). */
  client(): Cluster {
    const c = new Cluster(this.nodes.filter((n) => n.proc).map((n) => ({ host: '127.0.0.1', port: n.port })), {
      clusterRetryStrategy: () => 100,
    });
    c.on('error', () => undefined);
    return c;
  }

  /** Runs one command on one node with redis-cli semantics (no redirection). */
  async call(port: number, ...args: (string | number)[]): Promise<unknown> {
    const c = await ping(port);
    try { return await c.call(String(args[0]), ...args.slice(1).map(String)); } finally { c.disconnect(); }
  }

  /** Port of the master that serves `slot`, from the view of any live node. */
  async masterOf(slot: number): Promise<number> {
    const live = this.nodes.find((n) => n.proc);
    const slots = await this.call(live!.port, 'CLUSTER', 'SLOTS') as [number, number, [string, number, string]][];
    for (const [from, to, master] of slots) if (slot >= from && slot <= to) return Number(master[1]);
    throw new Error(`no master serves slot ${slot}`);
  }

  /** Ports of the replicas of the master on `port`. */
  async replicasOf(port: number): Promise<number[]> {
    const text = String(await this.call(port, 'INFO', 'replication'));
    return [...text.matchAll(/slave\d+:ip=[^,]+,port=(\d+)/g)].map((m) => Number(m[1]));
  }

  /** Waits until every live node reports cluster_state:ok and agrees on all slots being served. */
  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    await until(async () => {
      for (const n of this.nodes) {
        if (!n.proc) continue;
        const info = String(await this.call(n.port, 'CLUSTER', 'INFO'));
        if (!info.includes('cluster_state:ok') || !info.includes('cluster_slots_ok:16384')) return false;
        if (!/cluster_known_nodes:(\d+)/.test(info) || Number(/cluster_known_nodes:(\d+)/.exec(info)![1]) < this.nodes.filter((x) => x.proc).length) return false;
      }
      return true;
    }, timeoutMs, 'the cluster to be healthy');
  }

  node(port: number): ClusterNode {
    const n = this.nodes.find((x) => x.port === port);
    if (!n) throw new Error(`no node on port ${port}`);
    return n;
  }

  /** SIGKILL one node and wait for its exit. */
  async kill(port: number): Promise<void> {
    const n = this.node(port);
    const proc = n.proc;
    n.proc = undefined;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
  }

  /** Sum of INFO cpu (user + sys seconds) over the live nodes. */
  async cpuSeconds(): Promise<number> {
    let total = 0;
    for (const n of this.nodes) {
      if (!n.proc) continue;
      const text = String(await this.call(n.port, 'INFO', 'cpu'));
      for (const f of ['used_cpu_sys', 'used_cpu_user']) total += Number(new RegExp(`${f}:([\\d.]+)`).exec(text)?.[1] ?? 0);
    }
    return total;
  }

  async dispose(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.kill(n.port)));
    for (const n of this.nodes) rmSync(n.dir, { recursive: true, force: true });
  }
}
