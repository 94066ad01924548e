import { parseArgs, type ParseArgsConfig } from 'node:util';

/** Options every command that talks to Redis takes. */
export const redisOptions = {
  redis: { type: 'string' },
  namespace: { type: 'string', short: 'n' },
  prefix: { type: 'string', default: 'cachebus' },
  secret: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/** A usage error: printed with the command's usage, exit code 2. */
export class UsageError extends Error {}

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

export function redisUrl(flag: string | undefined): string {
  return flag ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
}

export function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`--${flag} is required`);
  return value;
}
