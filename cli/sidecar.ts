import { OutboxRelay } from '../bus/outbox/relay.js';
import { DEFAULT_OUTBOX } from '../bus/outbox/triggers.js';
import { Sidecar, type SidecarService } from '../bus/sidecar/sidecar.js';
import { createFlusherService, type FlusherService } from '../bus/write-behind/service.js';
import { Redis } from 'ioredis';
import pg from 'pg';
import { redactUrl } from '../bus/bus.js';
import { outboxBacklog, outboxOldestAge, SidecarMetrics } from '../worker-runtime/metrics/metrics-sidecar.js';
import { CliError, UsageError, databaseUrl, namespaceFlag, noPositionals, parse, prefixFlag, redisOptions, redisUrl } from './args.js';
import { checkPort, checkPostgres, checkRedis, findOutbox, OutboxNotFoundError, reason } from './checks.js';

export const usage = `cachebus sidecar --namespace NS [--database URL] [--redis URL] [--port 9464] [--host 127.0.0.1]
                 [--prefix P] [--secret S] [--services outbox,...] [--outbox-table T] [--batch-size 1000] [--poll-ms 250]
  Runs the namespace's background services until SIGTERM/SIGINT, then stops them gracefully:
    outbox        drains the outbox table the triggers fill (cachebus install-triggers) into the stream
    write-behind  flushes rows written with writeBehind() to Postgres (docs/write-behind.md)
  At start-up it checks Redis, Postgres and the outbox table, and prints where it looks. Without
  --outbox-table it uses the one cachebus_outbox table in any schema (install-triggers creates it
  next to the table it watches; with several, the one whose triggers feed this namespace).
  --services runs only the named services; by default all, the outbox relay only if an outbox
  table was found. Serves /health and /metrics on --port (0 picks a free port). --database
  defaults to $DATABASE_URL, --redis to $REDIS_URL.`;

/** Flags of every service (add a service's flags here). */
const options = {
  ...redisOptions,
  database: { type: 'string', short: 'd' },
  port: { type: 'string', short: 'p', default: '9464' },
  host: { type: 'string', default: '127.0.0.1' },
  services: { type: 'string' },
  'outbox-table': { type: 'string' },
  'batch-size': { type: 'string' },
  'poll-ms': { type: 'string' },
} as const;

/** What a service factory gets: the parsed flags and the shared connection settings. */
export interface SidecarContext {
  readonly namespace: string;
  readonly prefix: string;
  readonly secret: string | undefined;
  readonly redis: string;
  readonly database: string;
  /** The outbox table found at start-up ("schema.table"), when the outbox service runs. */
  readonly outbox: string | undefined;
  readonly flags: ReturnType<typeof parse<typeof options>>['values'];
}

function int(flags: SidecarContext['flags'], name: 'batch-size' | 'poll-ms' | 'port'): number | undefined {
  const v = flags[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer (got ${v})`);
  if (name === 'port' && n > 65_535) throw new UsageError(`--port must be 0-65535 (got ${v})`);
  return n;
}

/** The sidecar's services: one line each; a factory may return undefined to stay off. */
export const services: ((ctx: SidecarContext) => SidecarService | undefined)[] = [
  (c) => new OutboxRelay({
    pg: c.database, redis: c.redis, namespace: c.namespace, prefix: c.prefix, secret: c.secret,
    outbox: c.outbox ?? c.flags['outbox-table'], batchSize: int(c.flags, 'batch-size'), pollMs: int(c.flags, 'poll-ms'),
  }),
  (c) => createFlusherService({ pg: c.database, redis: c.redis, namespace: c.namespace, prefix: c.prefix }),
];

/** How long start-up (checks, services, HTTP listen) may take before the sidecar gives up. */
const START_TIMEOUT_MS = 20_000;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, options);
  if (values.help) {
    console.log(usage);
    return 0;
  }
  noPositionals(positionals);
  // Everything is validated before the first connection.
  const namespace = namespaceFlag(values.namespace);
  const prefix = prefixFlag(values.prefix);
  const redis = redisUrl(values.redis);
  const database = databaseUrl(values.database);
  const port = int(values, 'port');
  int(values, 'batch-size');
  int(values, 'poll-ms');
  const known = ['outbox', 'write-behind'];
  const only = values.services?.split(',').map((x) => x.trim()).filter(Boolean);
  if (only !== undefined && only.length === 0) throw new UsageError(`--services must name at least one service (known: ${known.join(', ')})`);
  const unknown = only?.filter((n) => !known.includes(n)) ?? [];
  if (unknown.length > 0) throw new UsageError(`--services: unknown ${unknown.join(', ')} (known: ${known.join(', ')})`);
  let wanted = only ?? known;

  if (port !== undefined) await checkPort(values.host, port);
  await checkRedis(redis);
  await checkPostgres(database);
  let outbox: string | undefined;
  let fed = true;
  if (wanted.includes('outbox')) {
    try {
      ({ table: outbox, fed } = await findOutbox(database, namespace, values['outbox-table'], DEFAULT_OUTBOX));
    } catch (err) {
      // Asked for by name (--services outbox, --outbox-table): a missing outbox is fatal. By
      // default, the other services run and the sidecar says, once, why the relay is off.
      if (!(err instanceof OutboxNotFoundError) || only !== undefined || values['outbox-table'] !== undefined) throw err;
      console.error(`cachebus sidecar: ${err.message}; the outbox relay is off`);
      wanted = wanted.filter((n) => n !== 'outbox');
    }
  }
  console.log(`cachebus sidecar: namespace ${namespace}, Redis ${redactUrl(redis)} (prefix ${prefix}), Postgres ${redactUrl(database)}` +
    (outbox !== undefined ? `, outbox table ${outbox}${fed ? '' : ` (no trigger feeds namespace ${namespace} yet: cachebus install-triggers)`}` : ''));

  const ctx: SidecarContext = { namespace, prefix, secret: values.secret, redis, database, outbox, flags: values };
  const metrics = new SidecarMetrics();
  const sidecar = new Sidecar({ port, host: values.host, metrics });
  const made = services.map((make) => make(ctx)).filter((s): s is SidecarService => s !== undefined);
  for (const s of made) if (wanted.includes(s.name)) sidecar.add(s);
  let metricsPg: pg.Pool | undefined;
  let metricsRedis: Redis | undefined;
  const shutdown = async (): Promise<string[]> => {
    const stuck = await sidecar.stop();
    metrics.close();
    metricsRedis?.disconnect();
    await metricsPg?.end().catch(() => undefined);
    return stuck;
  };

  // SIGTERM/SIGINT during start-up stop it too; the handlers go away on every way out.
  let onSignal: (signal: NodeJS.Signals) => void = () => undefined;
  const stop = new Promise<string>((resolve) => { onSignal = resolve; });
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    let timer: NodeJS.Timeout | undefined;
    const started = await Promise.race([
      sidecar.start().then(() => true),
      stop.then(() => false),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CliError(`the services did not start within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
      }),
    ]).finally(() => clearTimeout(timer));
    if (!started) {
      await shutdown();
      return 0;
    }
  } catch (err) {
    await shutdown();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const code = (err as { code?: unknown }).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      throw new CliError(`cannot serve /metrics on ${values.host}:${port}: ${reason(err)} (choose another --port or --host; 0 picks a free port)`);
    }
    throw err;
  }
  // Scrape-time reads (outbox backlog, pending write-behind rows) on connections of their own.
  metricsPg = new pg.Pool({ connectionString: database, max: 1 });
  metricsPg.on('error', () => undefined);
  metricsRedis = new Redis(redis, { maxRetriesPerRequest: 1, connectionName: `cachebus:${namespace}:metrics` });
  metricsRedis.on('error', () => undefined);
  for (const s of sidecar.services) {
    if (s instanceof OutboxRelay) {
      metrics.addOutbox(s, {
        namespace, backlog: outboxBacklog(metricsPg, outbox ?? DEFAULT_OUTBOX), oldestAge: outboxOldestAge(metricsPg, outbox ?? DEFAULT_OUTBOX, namespace),
      });
    } else if (s.name === 'write-behind' && (s as FlusherService).flusher !== undefined) {
      metrics.addFlusher((s as FlusherService).flusher!, { namespace, redis: metricsRedis });
    }
  }
  const names = sidecar.services.map((s) => s.name).join(', ');
  console.log(`cachebus sidecar: running ${names} for namespace ${namespace}` +
    (sidecar.port !== undefined ? ` on http://${values.host}:${sidecar.port}` : ''));
  const signal = await stop;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  console.log(`cachebus sidecar: ${signal}, stopping`);
  const stuck = await shutdown();
  if (stuck.length > 0) throw new CliError(`${stuck.join(', ')} did not stop in time; exiting anyway`);
  return 0;
}
