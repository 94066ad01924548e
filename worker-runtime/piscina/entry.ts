/**
 * The runtime entry of cachebus/piscina (package.json "exports"; its types are index.d.ts): loads index.js
 * dynamically, so that a missing piscina fails with MissingPeerError naming the package to
 * install instead of Node's "Cannot find package". Exports exactly what index.ts exports
 * (test/import-graph.test.ts checks it).
 */
import { loadCapability } from '../peers.js';

const m = await loadCapability('cachebus/piscina', ['piscina'], () => import('./index.js'));

export const {
  threadCache,
  onThreadClose,
  createCachePool,
  threadStats,
  closeCachePool,
} = m;
