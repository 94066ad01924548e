import type { SidecarService } from '../sidecar/sidecar.js';
import { RelayHub, type RelayHubOptions } from './hub.js';

/**
 * The relay hub as a sidecar service: `sidecar.add(relayHubService(options))` runs one hub in
 * the sidecar process, with its health under `/health` (`relay`). It serves the caches the
 * sidecar process reaches: its worker threads (BroadcastChannel) and the children it forked
 * with IPC (pass them to `hub.attach`). Processes the sidecar did not fork cannot reach it.
 */
export function relayHubService(options: RelayHubOptions = {}): SidecarService & { readonly hub: RelayHub | undefined } {
  let hub: RelayHub | undefined;
  return {
    name: 'relay',
    get hub() { return hub; },
    start(): Promise<void> {
      hub ??= RelayHub.start(options);
      return Promise.resolve();
    },
    async stop(): Promise<void> {
      await hub?.close();
    },
    health(): { ok: boolean; detail?: unknown } {
      if (hub === undefined) return { ok: false, detail: 'not started' };
      const h = hub.health();
      return { ok: h.ok, detail: { topics: h.topics, stats: hub.stats } };
    },
  };
}
