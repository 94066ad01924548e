import type { EventEmitter } from 'node:events';

/**
 * How background errors are reported everywhere in cachebus: emitted as `error` when someone
 * listens, otherwise logged to stderr once per distinct message (as ioredis' silentEmit does).
 * Never throws, so a background error cannot crash the process.
 */
export function errorReporter(emitter: EventEmitter, tag: () => string): (err: unknown) => void {
  let last = '';
  return (err) => {
    if (emitter.listenerCount('error') > 0) {
      emitter.emit('error', err);
      return;
    }
    const msg = String((err as Error)?.message ?? err);
    if (msg !== last) {
      last = msg;
      console.error(`[${tag()}] ${msg}`);
    }
  };
}
