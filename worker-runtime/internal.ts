/** Internals for tests, tools and the sidecar; not covered by semver. */
export * from './index.js';
export { Bus, newOrigin, type BusOptions } from '../bus/bus.js';
export { busKeys, type BusKeys } from '../bus/keys.js';
export { encode, decode, sign, canonical, type DecodedEntry } from '../bus/wire.js';
export { compareStreamIds, parseStreamId } from '../bus/stream-id.js';
export { connect, backoff, duplicateForBlocking, type RedisInput, type RedisClient } from '../bus/connection.js';
export { resolveOptions, kCacheDefaults } from './options.js';
export { createStore } from './policies/index.js';
