/**
 * The runtime entry of cachebus/postgres (package.json "exports"; its types are index.d.ts): loads index.js
 * dynamically, so that a missing pg fails with MissingPeerError naming the package to
 * install instead of Node's "Cannot find package". Exports exactly what index.ts exports
 * (test/import-graph.test.ts checks it).
 */
import { loadCapability } from '../peers.js';

const m = await loadCapability('cachebus/postgres', ['pg'], () => import('./index.js'));

export const {
  entity,
  transaction,
  EntityHandle,
  Transaction,
  installTriggers,
  uninstallTriggers,
  installOutbox,
  OUTBOX_CHANNEL,
} = m;
