/**
 * cachebus/cluster — node:cluster wiring (`startCluster`, worker helpers) and the relay hub that
 * reads the stream once per host and relays it to the workers over IPC or BroadcastChannel (the
 * relay client a cache uses, options.relay, is in the core). No optional library needed.
 * Invariants here: I2 and I3 hold through the hub (it relays gaps and proofs; a closed hub proves
 * nothing more).
 * The folder's map: ../README.md.
 */
export {
  startCluster, ClusterHandle, kClusterDefaults, isClusterWorker, workerIndex, workerConfig, workerReady, onShutdown,
  type ClusterOptions, type ClusterWorkerInfo, type ClusterEvents,
} from './cluster.js';
export {
  startRelayHub, RelayHub, kRelayHubDefaults, type RelayHubOptions, type RelayHubStats, type RelayHubEvents,
} from '../../bus/relay/hub.js';
export { relayHubService } from '../../bus/relay/service.js';
export type { RelayMode } from '../relay-client.js';
