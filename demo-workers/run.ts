import { existsSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCluster } from '../worker-runtime/cluster/index.js';
import { DemoUsageError, parseDemoArgs, usage, type DemoOptions } from './args.js';
import { serveDemoMetrics, type DemoLive } from './demo-metrics.js';
import { drive, getJson, type DriverCounts } from './driver.js';
import { DemoInfraError } from './errors.js';
import { openInfra, type Infra } from './infra.js';
import { LiveBoard } from './live.js';
import { loadPageAssets, reportPage, servePage, type PageAssets } from './page-server.js';
import { Progress } from './progress.js';
import { productsTable, type ReadyInfo, type StatsReply, type WorkerConfig } from './protocol.js';
import { skippedResult, summarize, type ScenarioResult } from './results.js';
import type { RunInfo, Scenario, ScenarioContext } from './scenario.js';
import { selectScenarios } from './scenarios/index.js';
import { startSampler } from './sampler.js';
import { renderTable, verdict } from './table.js';
import { Truth } from './truth.js';

type MetricJson = Awaited<ReturnType<import('prom-client').Registry['getMetricsAsJSON']>>;

const HTTP_WORKER = fileURLToPath(new URL('./http-worker.js', import.meta.url));

const redact = (url: string): string => {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
};

const SOURCES: Record<string, string> = {
  REDIS_URL: 'from REDIS_URL', DATABASE_URL: 'from DATABASE_URL', loopback: 'found on loopback',
  owned: 'throwaway redis-server started by the demo', pglite: 'in-process PGlite started by the demo',
};

async function baseline(infra: Infra): Promise<Map<number, number>> {
  const r = await infra.pool.query<{ id: number; version: string }>(`SELECT id, version FROM ${productsTable(infra.schema)}`);
  return new Map(r.rows.map((row) => [row.id, Number(row.version)]));
}

function newCounts(): DriverCounts {
  return { reads: 0, hits: 0, writes: 0, unpublished: 0, errors: 0, mainReads: 0, threadReads: 0 };
}

interface RunState {
  readonly options: DemoOptions;
  readonly infra: Infra;
  readonly namespace: string;
  readonly abort: AbortSignal;
  readonly progress: Progress;
  readonly metrics: boolean;
  live: DemoLive | undefined;
  /** What the live page shows. */
  readonly board: LiveBoard;
  /** HTTP ports of the running scenario's workers (for /metrics). */
  ports: () => (number | undefined)[];
}

/** One scenario: fresh workers, the load, the exact count, the workers' stats, then stop. */
async function runScenario(scenario: Scenario, st: RunState, index: number): Promise<ScenarioResult> {
  const { options, infra, board } = st;
  const ctx: ScenarioContext = { options, infra, redisUrl: infra.redisUrl, namespace: st.namespace, notes: [] };
  const reason = scenario.unavailable?.(ctx);
  if (reason !== undefined) return skippedResult(scenario, options.boundMs, reason);
  board.status({ phase: 'setup', s: index });
  try {
    await scenario.setup?.(ctx);
    const config: WorkerConfig = {
      redisUrl: scenario.bus ? ctx.redisUrl : null, databaseUrl: infra.databaseUrl, schema: infra.schema,
      prefix: infra.prefix, namespace: st.namespace, maxStaleMs: Math.floor(options.boundMs / 2),
      maxEntries: Math.max(1000, options.products), threads: options.threads, writer: scenario.writer ?? 'sql',
      metrics: st.metrics,
    };
    const cluster = await startCluster({
      exec: HTTP_WORKER, workers: options.workers, config, readyTimeoutMs: 60_000,
      // The demo's Redis has no AOF: write-behind warns about that once per cache; fine for a demo.
      execArgv: [...process.execArgv, '--disable-warning=CACHEBUS_WB_DURABILITY'],
    });
    try {
      const ports = (): (number | undefined)[] =>
        cluster.workers.map((w) => (w?.ready ? (w.info as ReadyInfo).port : undefined));
      st.ports = ports;
      const truth = new Truth(await baseline(infra), Date.now(), options.boundMs);
      const counts = newCounts();
      const load = new AbortController();
      const stopLoad = (): void => load.abort();
      st.abort.addEventListener('abort', stopLoad);
      const started = Date.now();
      const run: RunInfo = {
        durationMs: options.durationMs,
        signal: load.signal,
        workerPids: () => cluster.workers.flatMap((w) => (w?.ready ? [w.pid] : [])),
        mark: (label) => board.mark('chaos', label),
        at: (fraction) => new Promise<void>((resolve) => {
          if (load.signal.aborted) { resolve(); return; }
          const timer = setTimeout(done, Math.max(0, started + fraction * options.durationMs - Date.now()));
          function done(): void { clearTimeout(timer); load.signal.removeEventListener('abort', done); resolve(); }
          load.signal.addEventListener('abort', done);
        }),
      };
      st.live = { scenario: scenario.name, reads: 0, staleReads: 0, writes: 0, hits: 0 };
      const liveTimer = setInterval(() => {
        st.live = { scenario: scenario.name, reads: counts.reads, staleReads: truth.liveStale, writes: counts.writes, hits: counts.hits };
      }, 500);
      st.progress.start(scenario.name, options.durationMs, counts, truth);
      board.status({ phase: 'load', s: index, loadStart: started, loadEnd: started + options.durationMs });
      const sampler = startSampler({ board, s: index, counts, truth, ports, bus: scenario.bus });
      const during = scenario.during?.(ctx, run).catch((err: unknown) => { ctx.notes.push(`fault step failed: ${(err as Error)?.message ?? err}`); });
      try {
        await drive({
          ports, truth, durationMs: options.durationMs, concurrency: options.concurrency, products: options.products,
          writeRatio: options.writeRatio, external: scenario.externalWriter?.(ctx), signal: load.signal,
        }, counts);
      } finally {
        load.abort();
        st.abort.removeEventListener('abort', stopLoad);
        clearInterval(liveTimer);
        await sampler.loadOver();
        board.status({ phase: 'check', s: index });
      }
      const elapsed = Date.now() - started;
      await during;
      const workerStats = async (): Promise<StatsReply[]> =>
        (await Promise.all(ports().map((p) => (p === undefined ? undefined : getJson<StatsReply>(p, '/stats').catch(() => undefined)))))
          .filter((s): s is StatsReply => s !== undefined);
      const interrupted = st.abort.aborted;
      if (interrupted) ctx.notes.push(`interrupted after ${(elapsed / 1000).toFixed(1)} s`);
      const checked = scenario.verify === undefined || interrupted ? true : await scenario.verify(ctx, truth.latest(), workerStats)
        .catch((err: unknown) => { ctx.notes.push(`check failed: ${(err as Error)?.message ?? err}`); return false; });
      const stats = await workerStats();
      await sampler.stop();
      const stale = truth.finish(options.boundMs);
      const result = { ...summarize(scenario, options.boundMs, elapsed, counts, stale, stats, ctx.notes, checked), interrupted };
      st.live = { scenario: scenario.name, reads: stale.reads, staleReads: stale.staleReads, writes: counts.writes, hits: counts.hits };
      st.progress.stop(`  ${scenario.name.padEnd(16)} ${result.reads.toLocaleString('en-US')} reads, ${result.staleReads.toLocaleString('en-US')} stale, ${result.staleBeyondBound.toLocaleString('en-US')} older than ${options.boundMs} ms${result.ok || interrupted ? '' : '  FAIL'}`);
      return result;
    } finally {
      st.ports = () => [];
      st.progress.stop();
      await cluster.stop();
    }
  } finally {
    await scenario.teardown?.(ctx);
  }
}

function header(o: DemoOptions, infra: Infra, port: number, note: string | undefined, assets: PageAssets | Error): string {
  const caches = o.workers * (1 + o.threads);
  return [
    `cachebus demo: ${o.workers} HTTP workers (node:cluster), each with its own cache and ${o.threads} piscina threads with one cache each = ${caches} local caches`,
    `${o.products} products, ${(o.durationMs / 1000).toFixed(1)} s per scenario, ${o.concurrency} requests in flight, ${(o.writeRatio * 100).toFixed(0)} % writes, staleness bound ${o.boundMs} ms`,
    `Redis ${redact(infra.redisUrl)} (${SOURCES[infra.redisSource]}); PostgreSQL ${redact(infra.databaseUrl)} (${SOURCES[infra.pgSource]}), schema ${infra.schema}`,
    assets instanceof Error
      ? `live page: unavailable (${assets.message})`
      : `live page: http://127.0.0.1:${port}/  (open it in a browser; charts update every second)`,
    `/metrics: http://127.0.0.1:${port}/metrics${note ? ` (${note})` : ''}`,
  ].join('\n');
}

/**
 * The demo: parses argv, finds or starts the servers, runs the scenarios in order, prints the
 * table (or JSON) and cleans up everything it created, Ctrl-C included. Resolves with the exit
 * code: 0 when every row shows what it should, 1 when one does not (or a server is missing),
 * 2 on bad arguments, 130 when interrupted.
 */
export async function runDemo(argv: string[]): Promise<number> {
  let options: DemoOptions;
  let selected: Scenario[];
  try {
    options = parseDemoArgs(argv);
    if (options.help) {
      console.log(usage);
      return 0;
    }
    selected = selectScenarios(options.scenarios);
  } catch (err) {
    if (err instanceof DemoUsageError || /unknown scenario/.test(String(err))) {
      console.error(`demo: ${(err as Error).message}\n\n${usage}`);
      return 2;
    }
    throw err;
  }

  // The page's files, and where --report goes: checked before anything starts.
  let assets: PageAssets | Error;
  try {
    assets = loadPageAssets();
  } catch (err) {
    assets = err as Error;
  }
  if (options.report !== undefined) {
    if (assets instanceof Error) {
      console.error(`demo: cannot write --report: ${assets.message}`);
      return 1;
    }
    if (!existsSync(dirname(resolve(options.report)))) {
      console.error(`demo: --report ${options.report}: its directory does not exist\n\n${usage}`);
      return 2;
    }
  }

  const abort = new AbortController();
  const progress = new Progress();
  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) process.exit(130); // second Ctrl-C: leave now
    interrupted = true;
    progress.note('\ninterrupted: stopping the workers and cleaning up (Ctrl-C again to leave at once)');
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const out = (text: string): void => { (options.json ? console.error : console.log)(text); };

  let infra: Infra | undefined;
  const results: ScenarioResult[] = [];
  let metrics: Awaited<ReturnType<typeof serveDemoMetrics>> | undefined;
  let board: LiveBoard | undefined;
  try {
    try {
      infra = await openInfra(options.products);
    } catch (err) {
      if (err instanceof DemoInfraError) {
        console.error(`demo: ${err.message}`);
        return 1;
      }
      throw err;
    }
    const caches = `${options.workers} workers × (1 + ${options.threads} threads) = ${options.workers * (1 + options.threads)} local caches`;
    board = new LiveBoard({ boundMs: options.boundMs, durationMs: options.durationMs, scenarios: selected.map((x) => x.name), caches });
    const st: RunState = {
      options, infra, namespace: `demo-${infra.prefix.slice(-8)}`, abort: abort.signal, progress, metrics: true, live: undefined,
      board: board, ports: () => [],
    };
    const scrapeWorkers = async (): Promise<MetricJson[]> => (await Promise.all(st.ports().map((p) =>
      (p === undefined ? [] : getJson<MetricJson>(p, '/metrics.json').catch((): MetricJson => [])))));
    metrics = await serveDemoMetrics(options.metricsPort, () => st.live, scrapeWorkers, (req, res) => servePage(req, res, board!, assets));
    out(header(options, infra, metrics.port, metrics.note, assets));
    out('');
    for (const scenario of selected) {
      if (abort.signal.aborted) break;
      const r = await runScenario(scenario, st, selected.indexOf(scenario));
      results.push(r);
      st.board.result(r);
    }
    st.board.done(verdict(results, options.boundMs));
    if (options.report !== undefined && !(assets instanceof Error)) {
      writeFileSync(options.report, reportPage(assets, st.board.state));
      out(`report: ${resolve(options.report)}`);
    }
  } finally {
    progress.stop();
    board?.close(); // ends the page's event streams (the page keeps what it shows)
    await metrics?.close();
    await infra?.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // A CLI must end: if a stray handle lingers after cleanup, leave anyway.
    setTimeout(() => process.exit(process.exitCode ?? 0), 3_000).unref();
  }

  if (options.json) {
    console.log(JSON.stringify({
      scenarios: results, boundMs: options.boundMs, workers: options.workers, threads: options.threads,
      durationMs: options.durationMs, interrupted,
      infra: infra && {
        redis: infra.redisSource, redisUrl: redact(infra.redisUrl), postgres: infra.pgSource, databaseUrl: redact(infra.databaseUrl),
        prefix: infra.prefix, schema: infra.schema,
      },
      ok: results.every((r) => r.ok),
    }, null, 2));
  } else {
    console.log(renderTable(results, options.boundMs));
    console.log('');
    console.log(verdict(results, options.boundMs));
  }
  if (interrupted) return 130;
  return results.every((r) => r.ok) ? 0 : 1;
}
