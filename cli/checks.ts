import { Redis } from 'ioredis';
import pg from 'pg';
import { redactUrl } from '../bus/bus.js';
import { CliError } from './args.js';

const TIMEOUT_MS = 3_000;

/** The reason of a connection failure in a few words (ECONNREFUSED, ENOTFOUND host, a server's refusal). */
export function reason(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown; errors?: unknown[] } | undefined;
  if (e && Array.isArray(e.errors) && e.errors.length > 0) return reason(e.errors[0]);
  const msg = String(e?.message ?? err).split('\n')[0]!.trim();
  if (msg !== '') return msg;
  return typeof e?.code === 'string' ? e.code : 'unknown error';
}

/** Connects once (no retries, bounded), PINGs, disconnects; throws CliError naming the flag. */
export async function checkRedis(url: string, flag = '--redis'): Promise<void> {
  const client = new Redis(url, {
    lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: TIMEOUT_MS,
    enableOfflineQueue: false, connectionName: 'cachebus:cli-check',
  });
  let first: unknown;
  client.on('error', (err: unknown) => { first ??= err; });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      client.connect().then(() => client.ping()),
      new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${TIMEOUT_MS} ms`)), TIMEOUT_MS); }),
    ]);
  } catch (err) {
    throw new CliError(`cannot reach Redis at ${redactUrl(url)}: ${reason(first ?? err)} (set ${flag} or REDIS_URL)`);
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}

/** Connects once (bounded), runs SELECT 1, disconnects; throws CliError naming the flag. */
export async function checkPostgres(url: string, flag = '--database'): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: TIMEOUT_MS });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (err) {
    throw new CliError(`cannot reach Postgres at ${redactUrl(url)}: ${reason(err)} (set ${flag} or DATABASE_URL)`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** No outbox table, or several and none (or more than one) fed for this namespace. */
export class OutboxNotFoundError extends CliError {}

interface OutboxRow { schema: string; on_path: boolean; ours: boolean }

/**
 * Finds the outbox table the way `install-triggers` created it. With `--outbox-table`
 * ("table" or "schema.table", exact names as the relay quotes them) it must exist; without it,
 * the one table named cachebus_outbox in any schema is used (install-triggers creates it in
 * the schema of the table it watches); when there are several, the one a trigger function
 * fills for this namespace (install-triggers' functions insert into the quoted outbox with the
 * namespace as a literal); still several, or none, is an error asking for the flag.
 * Resolves with "schema.table", and whether a trigger function feeds it for this namespace.
 */
export async function findOutbox(url: string, namespace: string, flag: string | undefined, fallback: string): Promise<{ table: string; fed: boolean }> {
  const parts = (flag ?? fallback).split('.');
  const table = parts.pop()!;
  const schema = parts.length === 1 ? parts[0]! : undefined;
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: TIMEOUT_MS });
  client.on('error', () => undefined);
  let rows: OutboxRow[];
  try {
    await client.connect();
    ({ rows } = await client.query<OutboxRow>(
      `SELECT n.nspname AS schema, n.nspname = ANY (current_schemas(false)) AS on_path,
              EXISTS (SELECT 1 FROM pg_proc p
                       WHERE strpos(p.prosrc, 'INSERT INTO "' || n.nspname || '"."' || c.relname || '"') > 0
                         AND strpos(p.prosrc, $3) > 0) AS ours
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = $1 AND c.relkind IN ('r', 'p') AND ($2::text IS NULL OR n.nspname = $2)
        ORDER BY n.nspname`,
      [table, schema ?? null, `'${namespace.replace(/'/g, "''")}'`],
    ));
  } catch (err) {
    throw new CliError(`cannot look up the outbox table in ${redactUrl(url)}: ${reason(err)}`);
  } finally {
    await client.end().catch(() => undefined);
  }
  const where = redactUrl(url);
  if (flag !== undefined) {
    const hit = schema !== undefined ? rows[0] : rows.find((r) => r.on_path);
    if (hit === undefined) {
      throw new OutboxNotFoundError(`outbox table ${flag} not found in ${where} (--outbox-table; cachebus install-triggers creates it)`);
    }
    return { table: `${hit.schema}.${table}`, fed: hit.ours };
  }
  if (rows.length === 0) {
    throw new OutboxNotFoundError(`no outbox table ${table} in any schema of ${where}: run cachebus install-triggers first, pass --outbox-table, or leave the outbox out with --services`);
  }
  const ours = rows.filter((r) => r.ours);
  if (rows.length > 1 && ours.length === 1) return { table: `${ours[0]!.schema}.${table}`, fed: true };
  if (rows.length > 1) {
    throw new OutboxNotFoundError(`several outbox tables in ${where} ${ours.length === 0 ? 'and none has triggers' : 'have triggers'} for namespace ${namespace} (${(ours.length > 0 ? ours : rows).map((r) => `${r.schema}.${table}`).join(', ')}): choose one with --outbox-table`);
  }
  return { table: `${rows[0]!.schema}.${table}`, fed: rows[0]!.ours };
}

/** Fails fast when host:port cannot be bound, before any service starts (the real bind may still fail later). */
export async function checkPort(host: string, port: number, flag = '--port'): Promise<void> {
  if (port === 0) return;
  const { createServer } = await import('node:net');
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
  } catch (err) {
    throw new CliError(`cannot serve /metrics on ${host}:${port}: ${reason(err)} (choose another ${flag} or --host; 0 picks a free port)`);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}
