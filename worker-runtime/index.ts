/** cachebus public API. */
export { createCache, Cache, type Awaitable, type Loader, type EntryOptions } from './cache.js';
export type { CacheOptions } from './options.js';
export type { CacheEvents, CacheEventName, CacheStats, DropReason, ClearCause } from './events.js';
export type { PolicyName } from './policies/types.js';
export {
  errors, CachebusError, InvalidOptionError, InvalidKeyError, InvalidValueError, PublishError,
  ClosedError, ConnectionError, BadEntryError, type BadEntryReason,
} from '../bus/errors.js';
export type { GapCause, ReaderStatus } from '../bus/reader.js';
export { PROTOCOL_VERSION, type Invalidation } from '../bus/wire.js';
