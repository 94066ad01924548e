import type { SidecarService } from '../sidecar/sidecar.js';
import { Flusher } from './flusher.js';
import type { FlusherOptions } from './flusher-options.js';

/** The flusher as a sidecar service (`cachebus sidecar` adds it with one line). */
export interface FlusherService extends SidecarService {
  /** The running flusher (after start). */
  readonly flusher: Flusher | undefined;
}

/** Creates the write-behind flusher service of a namespace for the sidecar. */
export function createFlusherService(options: FlusherOptions): FlusherService {
  let flusher: Flusher | undefined;
  let stopping: Promise<void> | undefined;
  return {
    name: 'write-behind',
    get flusher() { return flusher; },
    async start() {
      flusher ??= await Flusher.open(options);
    },
    stop() {
      stopping ??= flusher?.close() ?? Promise.resolve();
      return stopping;
    },
    health() {
      return flusher?.health() ?? { ok: false, detail: 'not started' };
    },
  };
}
