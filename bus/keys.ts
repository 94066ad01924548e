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

/** The pub/sub channel of wake-up hints (option `wake: 'pubsub'`; a channel, not a key). */
export function wakeChannel(keys: BusKeys): string {
  return `${keys.base}:wake`;
}

/** The registry of caches that take same-host wake-up datagrams (option `wake: 'host'`, bus/host-wake.ts). */
export function peerRegistry(keys: BusKeys): string {
  return `${keys.base}:peers`;
}

/**
 * The broadcast port the caches of the namespace share on host `host` (option `wake: 'host'`,
 * bus/host-wake.ts): a string key, in the namespace's slot.
 */
export function hostPortKey(keys: BusKeys, host: string): string {
  return `${keys.base}:peers:port:${host}`;
}

/** Keys of one write-behind entity (docs/write-behind.md). `entity` is a validated SQL identifier. */
export interface WriteBehindKeys {
  /** Hash id → `<version>:<row json>`: the pending rows (the overlay readers see first). */
  readonly overlay: string;
  /** Sorted set id → ms when the row may be flushed (rows being flushed are not in it). */
  readonly dirty: string;
  /** Last version given out for the entity (hybrid logical clock). */
  readonly version: string;
  /** Last flush slot that has a tick job. */
  readonly tick: string;
  /** Sorted set claim id → lease end (ms): batches a flusher took and has not acknowledged yet. */
  readonly claims: string;
  /** Hash claim id → JSON array of the ids of that batch (to recover them if the lease runs out). */
  readonly claimIds: string;
}

export function writeBehindKeys(keys: BusKeys, entity: string): WriteBehindKeys {
  const b = `${keys.base}:wb:${entity}`;
  return {
    overlay: `${b}:overlay`, dirty: `${b}:dirty`, version: `${b}:version`, tick: `${b}:tick`,
    claims: `${b}:claims`, claimIds: `${b}:claim-ids`,
  };
}

/** Namespace-wide write-behind keys. The BullMQ queue lives under `<base>:<queueName>:*`. */
export function writeBehindShared(keys: BusKeys): {
  entities: string; defs: string; dead: string; deadDropped: string; queuePrefix: string; queueName: string;
} {
  return {
    entities: `${keys.base}:wb:entities`, defs: `${keys.base}:wb:defs`, dead: `${keys.base}:wb:dead`,
    deadDropped: `${keys.base}:wb:dead-dropped`, queuePrefix: keys.base, queueName: 'wb-flush',
  };
}
