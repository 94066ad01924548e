/**
 * Errors callers branch on: each has its own class and a stable `code`, keeps `cause`,
 * and is exported in the `errors` map.
 */
export class CachebusError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** An option was missing or out of range; the message names the option. */
export class InvalidOptionError extends CachebusError {
  constructor(message: string) {
    super('E_INVALID_OPTION', message);
  }
}

/** A key, tag or namespace that cannot be used (empty, too long, reserved characters). */
export class InvalidKeyError extends CachebusError {
  constructor(message: string) {
    super('E_INVALID_KEY', message);
  }
}

/** A value the cache will not store (undefined, or not measurable by `sizeOf`). */
export class InvalidValueError extends CachebusError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_INVALID_VALUE', message, options);
  }
}

/** Publishing an invalidation to the stream failed; the local drop already happened. */
export class PublishError extends CachebusError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_BUS_PUBLISH', message, options);
  }
}

/** The cache (or bus) was closed; the operation was not performed. */
export class ClosedError extends CachebusError {
  constructor(what = 'cache') {
    super('E_CLOSED', `the ${what} is closed`);
  }
}

/** Redis could not be reached in time when opening the bus. */
export class ConnectionError extends CachebusError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_REDIS_UNAVAILABLE', message, options);
  }
}

/** An entity, table or column that was not registered up front (no SQL is built from it). */
export class UnknownEntityError extends CachebusError {
  constructor(message: string) {
    super('E_UNKNOWN_ENTITY', message);
  }
}

/** A transaction's COMMIT rolled back (a statement failed earlier in it); nothing was published. */
export class TransactionRolledBackError extends CachebusError {
  constructor(message: string) {
    super('E_TX_ROLLED_BACK', message);
  }
}

/**
 * The connection was lost after COMMIT was sent (or Postgres answered it with a connection-level
 * error): the transaction may or may not have committed. Its invalidations WERE published (an
 * extra invalidation is harmless; a missed one is a stale value with no bound). Check the data
 * before retrying a non-idempotent change. `cause` is the error the COMMIT got.
 */
export class TransactionOutcomeUnknownError extends CachebusError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_TX_OUTCOME_UNKNOWN', message, options);
  }
}

/**
 * Write-behind back-pressure: the entity already has `maxPending` rows waiting for Postgres
 * (Postgres down or too slow). The write was NOT accepted; retry later, or raise
 * options.maxPending if Redis has the memory.
 */
export class BackpressureError extends CachebusError {
  readonly entity: string;
  readonly pending: number;
  constructor(entity: string, pending: number) {
    super('E_WB_BACKPRESSURE', `write-behind entity ${entity} has ${pending} rows waiting for Postgres (options.maxPending): the write was not accepted, retry later`);
    this.entity = entity;
    this.pending = pending;
  }
}

/**
 * A write-through write (`update`, `delete`, write-through `upsert`) on an entity that is
 * written behind Postgres: its version would not be ordered with the pending write-behind rows
 * (a pending row would overwrite it, a deleted row would come back). Use write-behind writes.
 */
export class WriteModeError extends CachebusError {
  readonly entity: string;
  constructor(entity: string, operation: string) {
    super('E_WB_MIXED_MODE', `entity ${entity} is written behind Postgres (write-behind): ${operation} would race its pending rows; write it with write-behind (upsert(row, { mode: 'write-behind' })), see docs/write-behind.md#mixing-modes`);
    this.entity = entity;
  }
}

/** startCluster gave up: a worker did not become ready in time, or it was called outside the primary. */
export class ClusterError extends CachebusError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_CLUSTER', message, options);
  }
}

/**
 * The per-host relay could not serve a cache: `E_RELAY_UNAVAILABLE` when no hub answered in
 * time, `E_RELAY_REFUSED` when the hub refused (the message names the option to change).
 */
export class RelayError extends CachebusError {
  constructor(code: 'E_RELAY_UNAVAILABLE' | 'E_RELAY_REFUSED', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/**
 * A loader took longer than its `timeout` (options.timeout or the entry's): the get rejects, every
 * caller waiting on the same load gets this error, and whatever the loader returns later is not stored.
 */
export class LoadTimeoutError extends CachebusError {
  readonly key: string;
  readonly timeoutMs: number;
  constructor(key: string, timeoutMs: number) {
    super('E_LOAD_TIMEOUT', `the load of ${JSON.stringify(key)} took longer than ${timeoutMs} ms`);
    this.key = key;
    this.timeoutMs = timeoutMs;
  }
}

/** A bus entry could not be decoded; carried in `badEntry` events, never thrown to callers. */
export class BadEntryError extends CachebusError {
  readonly reason: BadEntryReason;
  constructor(reason: BadEntryReason, message: string) {
    super('E_BAD_ENTRY', message);
    this.reason = reason;
  }
}

export type BadEntryReason = 'malformed' | 'version' | 'oversized' | 'signature';

/**
 * A subpath of cachebus was imported without the optional library it needs (an optional peer
 * dependency): the message names the package to install.
 */
export class MissingPeerError extends CachebusError {
  readonly subpath: string;
  /** The packages to install. */
  readonly peers: readonly string[];
  constructor(subpath: string, peers: readonly string[], options?: { cause?: unknown }) {
    const names = peers.length === 1 ? `the package ${peers[0]}, which is` : `the packages ${peers.slice(0, -1).join(', ')} and ${peers.at(-1)}, which are`;
    super('E_MISSING_PEER', `${subpath} needs ${names} not installed: npm install ${peers.join(' ')}`, options);
    this.subpath = subpath;
    this.peers = peers;
  }
}

export const errors = {
  CachebusError,
  InvalidOptionError,
  InvalidKeyError,
  InvalidValueError,
  PublishError,
  ClosedError,
  ConnectionError,
  UnknownEntityError,
  TransactionRolledBackError,
  TransactionOutcomeUnknownError,
  BackpressureError,
  WriteModeError,
  ClusterError,
  BadEntryError,
  RelayError,
  LoadTimeoutError,
  MissingPeerError,
} as const;
