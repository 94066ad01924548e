/**
 * Internals for tests, tools and the sidecar; not covered by semver. Loads every capability (and
 * so every optional peer): never imported by the core entry.
 */
export * from './index.js';
export * from './postgres/index.js';
export * from './write-behind/index.js';
export * from './cluster/index.js';
export * from './piscina/index.js';
export * from './metrics/index.js';
export { coreOf } from './scope.js';
export { overlayOf, openOverlay } from './overlay.js';
export { Bus, newOrigin, type BusOptions } from '../bus/bus.js';
export { busKeys, type BusKeys } from '../bus/keys.js';
export { encode, decode, sign, canonical, type DecodedEntry } from '../bus/wire.js';
export { publishScript, appendArgs, LUA_APPEND, EPOCH_GROUP_PREFIX, type Trim } from '../bus/lua-append.js';
export { compareStreamIds, parseStreamId } from '../bus/stream-id.js';
export { connect, backoff, duplicateForBlocking, type RedisInput, type RedisClient } from '../bus/connection.js';
export { resolveOptions, kCacheDefaults } from './options.js';
export { createStore } from './policies/index.js';
export { OutboxRelay, type OutboxRelayOptions, type OutboxRelayStats } from '../bus/outbox/relay.js';
export { outboxTableSql, DEFAULT_OUTBOX } from '../bus/outbox/triggers.js';
export { EntityRegistry, defineEntity, quoteIdent, quoteTable } from '../bus/entities.js';
export { HeldInvalidations, type CacheCore, type Scope } from './scope.js';
export { keySlot, slotOwner } from '../bus/cluster.js';
export { RelayClient, resolveRelayMode } from './relay-client.js';
export { RELAY_ENV, topicOf, topicChannel, type RelayMessage, type StreamMessage } from '../bus/relay/protocol.js';
export { writeBehindKeys, writeBehindShared, type WriteBehindKeys } from '../bus/keys.js';
export {
  WriteBehindWriter, TickQueue, listDeadLetters, countDeadLetters, retryDeadLetters, purgeDeadLetters,
  checkDurability, warnIfNotDurable, makeUpsert, conflictClause, UPSERT_METHODS, classifyPgError,
} from '../bus/write-behind/index.js';
