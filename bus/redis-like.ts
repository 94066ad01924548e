import type { Cluster, Redis } from 'ioredis';
import { InvalidOptionError } from './errors.js';

/**
 * What cachebus needs to recognise an ioredis client a caller passes in: a `Redis` or `Cluster`
 * of ioredis 5 or 6, whichever copy of ioredis the caller's app resolves. Structural on purpose:
 * ioredis 6's `Redis<"legacy">` and 5's `Redis` are different nominal types, and an app may hold
 * a copy of ioredis other than the one cachebus resolves (two majors, pnpm, a bundler). Methods,
 * not function-typed properties, so that both majors' overloads and generics are assignable.
 */
export interface RedisClientLike {
  readonly status: string;
  readonly isCluster: boolean;
  readonly options: object;
  duplicate(...args: never[]): unknown;
  quit(...args: never[]): Promise<unknown>;
  disconnect(...args: never[]): void;
}

/** True for an ioredis `Redis` or `Cluster` of either major and of any copy (no `instanceof`). */
export function isClientLike(x: unknown): x is RedisClientLike {
  if (typeof x !== 'object' || x === null) return false;
  const c = x as Partial<Record<keyof RedisClientLike | 'on', unknown>>;
  return typeof c.isCluster === 'boolean' && typeof c.status === 'string' && typeof c.duplicate === 'function'
    && typeof c.quit === 'function' && typeof c.disconnect === 'function' && typeof c.on === 'function';
}

/** `instanceof Cluster` that also holds for a Cluster of another ioredis copy. */
export function isClusterClient(c: Redis | Cluster | RedisClientLike): c is Cluster {
  return c.isCluster === true;
}

/**
 * Adopts a caller's client as the ioredis type cachebus compiles against. Both majors run the
 * same commands with the same reply shapes (ioredis 6 speaks RESP3 by default but its default
 * `replyMapping: 'legacy'` gives RESP2's shapes), except when the caller opted into
 * `replyMapping: 'resp3'` (maps as objects, doubles as numbers): refused here, with the option named.
 */
export function adoptClient(c: RedisClientLike, option = 'options.redis'): Redis | Cluster {
  const own = c.isCluster ? (c.options as { redisOptions?: { replyMapping?: unknown } }).redisOptions : c.options;
  if ((own as { replyMapping?: unknown } | undefined)?.replyMapping === 'resp3') {
    throw new InvalidOptionError(
      `${option}: an ioredis client created with replyMapping: 'resp3' is not supported; create it with the default replyMapping ('legacy') or pass a URL`,
    );
  }
  return c as unknown as Redis | Cluster;
}
