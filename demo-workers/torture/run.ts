import cluster from 'node:cluster';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startCluster, type ClusterHandle } from '../../worker-runtime/cluster/index.js';
import { LOOPBACK_PG, openInfra, type Infra } from '../infra.js';
import { cachebus } from '../sidecar-proc.js';
import { check, explain, requiredWrites, wedged, type Regression, type Verdict } from './checker.js';
import { fmt, History, now, resetClock } from './history.js';
import { ROWS, type TortureReady, type TortureWorkerConfig, type WorkerStats } from './layout.js';
import { Nemesis } from './nemesis.js';
import { randomSeed } from './prng.js';
import { describe, makeSchedule, type Fault } from './schedule.js';
import { StallProxy } from './proxy.js';
import { RelayedWorker } from './relayed.js';
import { TortureRedis, TortureSidecar } from './servers.js';
import { call, runWorkload } from './workload.js';

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

export interface TortureOptions {
  readonly seconds: number;
  readonly seed: number | undefined;
  readonly faults: readonly Fault[];
  readonly json: boolean;
  readonly workers: number;
  readonly boundMs: number;
  readonly loops: number;
  readonly pauseMs: number;
  readonly verbose: boolean;
  /** A deliberately broken workload (a test proves the checker catches it): '' or 'no-publish'. */
  readonly mutation: string;
}

/** The `--json` summary, exactly as issue 17 specifies it. */
export interface TortureSummary {
  seed: number; seconds: number; faults: Record<string, number>; reads: number; writes: number;
  violations: { staleBeyondBound: number; lostWrites: number; overtakenWrites: number; undetectedGaps: number; crashes: number; badMetrics: number };
  staleWithinBound: { count: number; p99Ms: number | null };
}

const withApp = (url: string, app: string): string => {
  const u = new URL(url);
  u.searchParams.set('application_name', app);
  return u.toString();
};

/** Runs one torture; resolves with the verdict and the summary. Prints progress to `log`. */
export async function torture(o: TortureOptions, log: (line: string) => void): Promise<{ verdict: Verdict; summary: TortureSummary }> {
  const seed = o.seed ?? randomSeed();
  log(`cachebus torture: seed ${seed} (replay with --seed ${seed}), ${o.seconds} s, ${o.workers} workers, bound ${o.boundMs} ms, faults ${o.faults.join(',') || 'none'}${o.mutation ? `, MUTATION ${o.mutation}` : ''}`);
  // One more slot than --workers: the worker fed by the relay hub (its own process, for stop-hub).
  const schedule = makeSchedule(seed, o.seconds, o.faults, o.workers + 1);
  log(`schedule: ${schedule.length} faults${o.verbose ? `\n  ${schedule.map(describe).join('\n  ')}` : ''}`);
  const history = new History();
  let stopping = false;
  const crash = (what: string, detail: string): void => { if (!stopping) history.crash(what, detail); };

  const redis = await TortureRedis.start(crash);
  let infra: Infra | undefined;
  let handle: ClusterHandle | undefined;
  const sidecars: TortureSidecar[] = [];
  let relayed: RelayedWorker | undefined;
  const pools: pg.Pool[] = [];
  const proxies: StallProxy[] = [];
  let pgProxy: StallProxy | undefined;
  const tails = new Map<number, string>();
  const onFork = (w: import('node:cluster').Worker): void => {
    const pid = w.process.pid!;
    const keep = (d: Buffer): void => { tails.set(pid, ((tails.get(pid) ?? '') + d.toString()).slice(-8_000)); };
    w.process.stdout?.on('data', keep);
    w.process.stderr?.on('data', keep);
  };
  cluster.on('fork', onFork);
  try {
    process.env.REDIS_URL = redis.url;
    process.env.DATABASE_URL ??= LOOPBACK_PG;
    infra = await openInfra(ROWS);
    const { schema, prefix } = infra;
    const table = `"${schema}".products`;
    const namespace = `torture-${prefix.slice(-8)}`;
    const appName = `cbt_${prefix.slice(-8)}`;
    log(`redis-server ${redis.url} (its own), Postgres schema ${schema}, key prefix ${prefix}`);
    // Every connection of the app goes to Postgres through a proxy the nemesis can make refuse logins.
    const pgUrl = new URL(infra.databaseUrl);
    pgProxy = await StallProxy.start(Number(pgUrl.port || 5432));
    pgUrl.hostname = '127.0.0.1';
    pgUrl.port = String(pgProxy.port);
    const dbUrl = withApp(pgUrl.toString(), appName);
    // Audit: every UPDATE that moves a version backwards (an older write overtaking a newer one).
    await infra.pool.query(`CREATE TABLE "${schema}".torture_regressions (id int, old_v bigint, new_v bigint)`);
    await infra.pool.query(`CREATE FUNCTION "${schema}".torture_audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO "${schema}".torture_regressions VALUES (OLD.id, OLD.version, NEW.version); RETURN NEW; END $$`);
    await infra.pool.query(`CREATE TRIGGER torture_audit AFTER UPDATE ON ${table} FOR EACH ROW
      WHEN (NEW.version < OLD.version) EXECUTE FUNCTION "${schema}".torture_audit()`);
    const outbox = `${schema}.cachebus_outbox`;
    await cachebus(['install-triggers', '--table', `${schema}.products`, '--entity', 'product', '--database', infra.databaseUrl, '--outbox-table', outbox, '--namespace', namespace]);
    // The outbox relays only what the outside writer changes: a worker's own writes must reach the
    // bus through the worker, or a missing invalidation there would be hidden by the trigger.
    const upd = (await infra.pool.query<{ name: string; fn: string }>(
      `SELECT tgname AS name, tgfoid::regproc::text AS fn FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname LIKE 'cachebus\\_%\\_upd'`, [table])).rows[0];
    if (upd === undefined) throw new Error(`install-triggers made no UPDATE trigger on ${table}`);
    await infra.pool.query(`DROP TRIGGER "${upd.name}" ON ${table};
      CREATE TRIGGER "${upd.name}" AFTER UPDATE ON ${table} REFERENCING OLD TABLE AS cachebus_old NEW TABLE AS cachebus_new
      FOR EACH STATEMENT WHEN (current_setting('application_name') = '${appName}_outside')
      EXECUTE FUNCTION ${upd.fn}()`);
    // Two sidecars, as production may run (I8): their flushers and outbox relays race for the same
    // rows, so a flush of an older version can meet a newer one (the version guard's job).
    for (let i = 0; i < 2; i++) {
      const sc = new TortureSidecar(['--namespace', namespace, '--prefix', prefix, '--redis', redis.url, '--database', dbUrl, '--outbox-table', outbox], crash);
      sc.onRestart = (downMs) => { const t = now(); history.sidecarDown.push([t - downMs, t]); };
      await sc.start();
      sidecars.push(sc);
    }

    const killed = new Set<number>();
    for (let i = 0; i <= o.workers; i++) proxies.push(await StallProxy.start(redis.port));
    const config: TortureWorkerConfig = {
      redisUrls: proxies.map((p) => `redis://127.0.0.1:${p.port}`), databaseUrl: dbUrl, schema, prefix, namespace, maxStaleMs: Math.max(100, Math.floor(o.boundMs / 2)), mutation: o.mutation,
    };
    handle = await startCluster({
      exec: WORKER, workers: o.workers, config, readyTimeoutMs: 60_000, restartDelayMs: 100, restartMaxDelayMs: 1_000, silent: true,
      execArgv: [...process.execArgv, '--disable-warning=CACHEBUS_WB_DURABILITY'],
    });
    const h = handle;
    h.on('error', (err) => crash('cluster', String((err as Error)?.message ?? err)));
    h.on('exit', (e) => {
      if (!e.expected && !killed.delete(e.pid)) crash(`worker w${e.index}`, `pid ${e.pid} exit ${e.code ?? e.signal}: ${(tails.get(e.pid) ?? '').trim().split('\n').slice(-60).join('\n      ')}`);
    });
    // Slot o.workers: a worker whose main cache reads through a relay hub in a process of its own.
    relayed = await RelayedWorker.start({ ...config, redisUrls: [config.redisUrls[o.workers]!] }, (e) => {
      if (!e.expected && !killed.delete(e.pid)) crash(`worker w${o.workers} (relayed)`, `pid ${e.pid} exit ${e.code ?? e.signal}: ${relayed?.tail() ?? ''}`);
    }, crash);
    const r = relayed;
    const slots = (): ({ port: number; pid: number } | undefined)[] =>
      [...h.workers.map((w) => (w?.ready ? w.info as TortureReady : undefined)), r.slot];
    log(`relay hub pid ${r.pid} feeds w${o.workers} (pid ${r.slot?.pid})`);

    const admin = new pg.Pool({ connectionString: infra.databaseUrl, max: 2 });
    const outside = new pg.Pool({ connectionString: withApp(pgUrl.toString(), `${appName}_outside`), max: 2 });
    for (const p of [admin, outside]) { p.on('error', () => undefined); pools.push(p); }
    const baseline = new Map((await admin.query<{ id: number; version: string }>(`SELECT id, version FROM ${table}`)).rows.map((r) => [r.id, Number(r.version)]));

    const nemesis = new Nemesis({
      seed, slots, history, redis, sidecars, admin, appName, stream: `${prefix}:{${namespace}}:inval`, namespace,
      expectExit: (pid) => killed.add(pid), proxies, pgProxy, hub: { slot: o.workers, pid: () => r.pid },
    });
    const load = new AbortController();
    resetClock();
    const t0 = now();
    const timer = setTimeout(() => load.abort(), o.seconds * 1000);
    const progress = setInterval(() => log(`  ${fmt(now() - t0)}: ${history.reads.length} reads, ${history.writes.length} writes, ${history.faults.length} faults, ${history.failed} failed requests`), 10_000);
    try {
      await Promise.all([
        nemesis.run(schedule, t0, load.signal),
        runWorkload({ slots, history, outside, table, loops: o.loops, pauseMs: o.pauseMs, signal: load.signal }),
      ]);
    } finally {
      clearTimeout(timer);
      clearInterval(progress);
    }
    const hs = r.stats;
    if (hs !== undefined) log(`relay hub: ${hs.entriesRelayed} entries relayed, ${hs.beats} beats, ${hs.hellos} hellos, ${hs.gaps} gaps`);
    // Heal: the sidecar runs again, every gap obligation is settled, write-behind drains.
    for (const sc of sidecars) if (!sc.up) await sc.start();
    await nemesis.settle();
    const loadEnd = now();
    const want = new Map<number, number>();
    for (const w of requiredWrites(history)) want.set(w.id, Math.max(want.get(w.id) ?? 0, w.v));
    const drainStart = now();
    let finalVersions = new Map<number, number>();
    for (;;) {
      finalVersions = new Map((await admin.query<{ id: number; version: string }>(`SELECT id, version FROM ${table}`)).rows.map((r) => [r.id, Number(r.version)]));
      const behind = [...want].filter(([id, v]) => (finalVersions.get(id) ?? -1) < v).length;
      if (behind === 0 || now() - drainStart > 30_000) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    log(`drained in ${Math.round(now() - drainStart)} ms; gap checks: ${nemesis.gapChecks.made} workers had to detect a gap, ${nemesis.gapChecks.met} did (the others restarted or failed)`);
    const regressions: Regression[] = (await admin.query<{ id: number; old_v: string; new_v: string }>(`SELECT id, old_v, new_v FROM "${schema}".torture_regressions`))
      .rows.map((r) => ({ id: r.id, oldV: Number(r.old_v), newV: Number(r.new_v) }));
    const verdict = check({ history, boundMs: o.boundMs, finalVersions, regressions, gapFailures: nemesis.gapFailures, baseline });
    for (const f of history.faults) if (f.skipped !== undefined) log(`  fault ${f.fault} at ${fmt(f.start - t0)} skipped: ${f.skipped}`);
    if (!verdict.ok || verdict.gapsNotCounted.length > 0) for (const line of explain(verdict, history, o.boundMs)) log(line);
    // Liveness: 10 s after the heal every cache serves again (its reader is caught up).
    const healDeadline = now() + 10_000;
    let unservable: string[] = [];
    let last: ({ i: number; x: WorkerStats } | undefined)[] = [];
    for (;;) {
      const st = last = await Promise.all(slots().map((s, i) => (s === undefined ? undefined : call<WorkerStats>(s.port, 'GET', '/stats', 2_000).then((x) => ({ i, x }), () => undefined))));
      unservable = st.flatMap((e) => (e === undefined ? [] : e.x.servable.flatMap((ok, k) => (ok ? [] : [`w${e.i} (pid ${e.x.pid}) ${k === 0 ? 'main' : `thread ${k}`}`]))));
      if (unservable.length === 0 || now() > healDeadline) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    for (const u of unservable) log(`note: cache ${u} still does not serve 10 s after every fault healed: its bus reader did not recover`);
    for (const line of wedged(history, loadEnd)) log(line);
    // Metrics stay sane whatever the clocks did: the lag histogram's sum finite and ≥ 0, no NaN lag.
    const badMetrics = last.flatMap((e) => (e === undefined || (Number.isFinite(e.x.lag.sumSeconds) && e.x.lag.sumSeconds >= 0 && e.x.lag.nonFinite === 0) ? []
      : [`BAD METRIC: w${e.i} (pid ${e.x.pid}) cachebus_invalidation_lag_seconds sum ${e.x.lag.sumSeconds} over ${e.x.lag.count}, ${e.x.lag.nonFinite} non-finite lags`]));
    for (const b of badMetrics) log(b);
    const lags = last.flatMap((e) => (e === undefined ? [] : [e.x.lag]));
    const lo = Math.min(...lags.map((l) => l.minMs ?? Infinity)), hi = Math.max(...lags.map((l) => l.maxMs ?? -Infinity));
    if (Number.isFinite(lo)) log(`invalidation lag seen by the running workers (now - t): ${Math.round(lo)} … ${Math.round(hi)} ms raw (a clock jump makes it negative or minutes long; the histogram clamps at 0)`);
    const summary: TortureSummary = {
      seed, seconds: o.seconds, faults: history.faultCounts(), reads: verdict.reads, writes: verdict.writes,
      violations: {
        staleBeyondBound: verdict.staleBeyondBound.length, lostWrites: verdict.lostWrites.length, overtakenWrites: verdict.overtakenWrites.length,
        undetectedGaps: verdict.undetectedGaps.length, crashes: verdict.crashes.length, badMetrics: badMetrics.length,
      },
      staleWithinBound: { count: verdict.staleWithinBound.count, p99Ms: verdict.staleWithinBound.p99Ms === null ? null : Math.round(verdict.staleWithinBound.p99Ms) },
    };
    return { verdict: { ...verdict, ok: verdict.ok && badMetrics.length === 0 }, summary };
  } finally {
    stopping = true;
    cluster.off('fork', onFork);
    await handle?.stop().catch(() => undefined);
    await relayed?.stop().catch(() => undefined);
    for (const sc of sidecars) await sc.stop().catch(() => undefined);
    for (const p of proxies) await p.close().catch(() => undefined);
    await pgProxy?.close().catch(() => undefined);
    for (const p of pools) await p.end().catch(() => undefined);
    await infra?.close().catch(() => undefined);
    await redis.dispose();
  }
}
