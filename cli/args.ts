import { parseArgs, type ParseArgsConfig } from 'node:util';
import { assertNamespace } from '../bus/keys.js';

/** Options every command that talks to Redis takes. */
export const redisOptions = {
  redis: { type: 'string' },
  namespace: { type: 'string', short: 'n' },
  prefix: { type: 'string', default: 'cachebus' },
  secret: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/** A usage error (bad flag or flag value): one line naming the flag, exit code 2. */
export class UsageError extends Error {}

/** A runtime failure the user can act on (server unreachable, table missing): one line, exit code 1. */
export class CliError extends Error {}

type Parsed<O extends NonNullable<ParseArgsConfig['options']>> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>
>;

export function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O): Parsed<O> {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/**
 * The Redis URL of --redis, else $REDIS_URL, else the local default; a value that is not a
 * redis:// or rediss:// URL is a usage error naming where it came from.
 */
export function redisUrl(flag: string | undefined): string {
  const url = flag ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const from = flag !== undefined ? '--redis' : 'REDIS_URL';
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`${from} must be a redis:// or rediss:// URL (got ${JSON.stringify(url)})`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new UsageError(`${from} must be a redis:// or rediss:// URL (got ${JSON.stringify(u.protocol)})`);
  }
  if (u.hostname === '') throw new UsageError(`${from} has no host (got ${JSON.stringify(url)})`);
  return url;
}

/** The Postgres URL of --database, else $DATABASE_URL, else the local default (postgres:// or postgresql://). */
export function databaseUrl(flag: string | undefined, fallback = 'postgres://postgres@127.0.0.1:5432/postgres'): string {
  const url = flag ?? process.env.DATABASE_URL ?? fallback;
  const from = flag !== undefined ? '--database' : 'DATABASE_URL';
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`${from} must be a postgres:// or postgresql:// URL (got ${JSON.stringify(url)})`);
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    throw new UsageError(`${from} must be a postgres:// or postgresql:// URL (got ${JSON.stringify(u.protocol)})`);
  }
  return url;
}

export function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`--${flag} is required`);
  return value;
}

/** --namespace, required and checked against the namespace rules before anything connects. */
export function namespaceFlag(value: string | undefined): string {
  const ns = required(value, 'namespace');
  try {
    assertNamespace(ns);
  } catch {
    throw new UsageError(`--namespace must be 1-128 characters of [A-Za-z0-9_.:-] (got ${JSON.stringify(ns)})`);
  }
  return ns;
}

/** --prefix: non-empty, without { or } (the namespace goes between braces for Redis Cluster). */
export function prefixFlag(value: string): string {
  if (value === '' || /[{}]/.test(value)) throw new UsageError(`--prefix must be a non-empty string without { or } (got ${JSON.stringify(value)})`);
  return value;
}

/** For commands without positional arguments: a stray word is a usage error, not silently ignored. */
export function noPositionals(positionals: readonly string[]): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])} (options start with --)`);
}
