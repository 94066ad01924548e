import { InvalidKeyError } from './errors.js';

/**
 * The one place that builds Redis key names. Every key of a namespace carries the
 * hash tag `{<namespace>}`, so that on Redis Cluster they all live in one slot.
 */
export interface BusKeys {
  /** The invalidation stream. */
  readonly stream: string;
  /** Prefix for the namespace's other keys (write-behind overlay, queue, outbox relay). */
  readonly base: string;
}

const NAMESPACE_RE = /^[A-Za-z0-9_.:-]{1,128}$/;

export function assertNamespace(namespace: string, option = 'namespace'): void {
  if (typeof namespace !== 'string' || !NAMESPACE_RE.test(namespace)) {
    throw new InvalidKeyError(
      `options.${option} must be 1-128 characters of [A-Za-z0-9_.:-] (got ${JSON.stringify(namespace)})`,
    );
  }
}

export function busKeys(prefix: string, namespace: string): BusKeys {
  assertNamespace(namespace);
  if (typeof prefix !== 'string' || prefix.length === 0 || /[{}]/.test(prefix)) {
    throw new InvalidKeyError('options.prefix must be a non-empty string without { or }');
  }
  const base = `${prefix}:{${namespace}}`;
  return { stream: `${base}:inval`, base };
}
