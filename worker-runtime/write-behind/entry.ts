/**
 * The runtime entry of cachebus/write-behind (package.json "exports"; its types are index.d.ts): loads index.js
 * dynamically, so that a missing bullmq or pg fails with MissingPeerError naming the package to
 * install instead of Node's "Cannot find package". Exports exactly what index.ts exports
 * (test/import-graph.test.ts checks it).
 */
import { loadCapability } from '../peers.js';

const m = await loadCapability('cachebus/write-behind', ['bullmq', 'pg'], () => import('./index.js'));

export const {
  writeBehind,
  writeBehindOf,
  WriteBehindEntity,
  Flusher,
  createFlusherService,
  kFlusherDefaults,
  kWriterDefaults,
  DURABILITY_WARNING,
} = m;
