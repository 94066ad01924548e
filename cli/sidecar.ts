import { OutboxRelay } from '../bus/outbox/relay.js';
import { DEFAULT_OUTBOX } from '../bus/outbox/triggers.js';
import { Sidecar, type SidecarService } from '../bus/sidecar/sidecar.js';
import { createFlusherService, type FlusherService } from '../bus/write-behind/service.js';
import { Redis } from 'ioredis';
import pg from 'pg';
import { outboxBacklog, SidecarMetrics } from '../worker-runtime/metrics-sidecar.js';
import { parse, redisOptions, redisUrl, required, UsageError } from './args.js';

export const usage = `cachebus sidecar --namespace NS [--database URL] [--redis URL] [--port 9464] [--host 127.0.0.1]
                 [--prefix P] [--secret S] [--services outbox,...] [--outbox-table T] [--batch-size 1000] [--poll-ms 250]
  Runs the namespace's background services until SIGTERM/SIGINT, then stops them gracefully:
    outbox   drains the outbox table the triggers fill (cachebus install-triggers) into the stream
    write-behind  flushes rows written with writeBehind() to Postgres (docs/write-behind.md)
  --services runs only the named services (default: all). Serves /health and /metrics on --port (0 picks a free port). --database defaults to
  $DATABASE_URL; --redis to $REDIS_URL.`;

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
  readonly flags: ReturnType<typeof parse<typeof options>>['values'];
}

function int(flags: SidecarContext['flags'], name: 'batch-size' | 'poll-ms' | 'port'): number | undefined {
  const v = flags[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer (got ${v})`);
  return n;
}

/** The sidecar's services: one line each; a factory may return undefined to stay off. */
export const services: ((ctx: SidecarContext) => SidecarService | undefined)[] = [
  (c) => new OutboxRelay({
    pg: c.database, redis: c.redis, namespace: c.namespace, prefix: c.prefix, secret: c.secret,
    outbox: c.flags['outbox-table'], batchSize: int(c.flags, 'batch-size'), pollMs: int(c.flags, 'poll-ms'),
  }),
  (c) => createFlusherService({ pg: c.database, redis: c.redis, namespace: c.namespace, prefix: c.prefix }),
];

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, options);
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const ctx: SidecarContext = {
    namespace: required(values.namespace, 'namespace'),
    prefix: values.prefix,
    secret: values.secret,
    redis: redisUrl(values.redis),
    database: values.database ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    flags: values,
  };
  const metrics = new SidecarMetrics();
  const sidecar = new Sidecar({ port: int(values, 'port'), host: values.host, metrics });
  const only = values.services?.split(',').map((x) => x.trim()).filter(Boolean);
  const made = services.map((make) => make(ctx)).filter((s): s is SidecarService => s !== undefined);
  const unknown = only?.filter((n) => !made.some((s) => s.name === n)) ?? [];
  if (unknown.length > 0) throw new UsageError(`--services: unknown ${unknown.join(', ')} (known: ${made.map((s) => s.name).join(', ')})`);
  for (const s of made) if (only === undefined || only.includes(s.name)) sidecar.add(s);
  const stop = new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  await sidecar.start();
  // Scrape-time reads (outbox backlog, pending write-behind rows) on connections of their own.
  const metricsPg = new pg.Pool({ connectionString: ctx.database, max: 1 });
  metricsPg.on('error', () => undefined);
  const metricsRedis = new Redis(ctx.redis, { maxRetriesPerRequest: 1, connectionName: `cachebus:${ctx.namespace}:metrics` });
  metricsRedis.on('error', () => undefined);
  for (const s of sidecar.services) {
    if (s instanceof OutboxRelay) {
      metrics.addOutbox(s, { namespace: ctx.namespace, backlog: outboxBacklog(metricsPg, values['outbox-table'] ?? DEFAULT_OUTBOX) });
    } else if (s.name === 'write-behind' && (s as FlusherService).flusher !== undefined) {
      metrics.addFlusher((s as FlusherService).flusher!, { namespace: ctx.namespace, redis: metricsRedis });
    }
  }
  const names = sidecar.services.map((s) => s.name).join(', ');
  console.log(`cachebus sidecar: running ${names} for namespace ${ctx.namespace}` +
    (sidecar.port !== undefined ? ` on http://${values.host}:${sidecar.port}` : ''));
  const signal = await stop;
  console.log(`cachebus sidecar: ${signal}, stopping`);
  const stuck = await sidecar.stop();
  metrics.close();
  metricsRedis.disconnect();
  await metricsPg.end().catch(() => undefined);
  if (stuck.length > 0) {
    console.error(`cachebus sidecar: ${stuck.join(', ')} did not stop in time; exiting anyway`);
    process.exit(1);
  }
  return 0;
}
