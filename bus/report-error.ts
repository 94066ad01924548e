import type { EventEmitter } from 'node:events';

/** The part of a pino-compatible logger background errors need (options.logger). */
export interface ErrorLogger {
  error(obj: object, msg?: string): void;
}

/**
 * How background errors are reported everywhere in cachebus: emitted as `error` when someone
 * listens, otherwise logged once per distinct message (as ioredis' silentEmit does): to
 * `logger.error({ err, source }, message)` when a logger is given, else one line on stderr.
 * Never throws (not even when the logger does), so a background error cannot crash the process.
 */
export function errorReporter(emitter: EventEmitter, tag: () => string, logger?: () => ErrorLogger | undefined): (err: unknown) => void {
  let last = '';
  return (err) => {
    if (emitter.listenerCount('error') > 0) {
      emitter.emit('error', err);
      return;
    }
    const msg = String((err as Error)?.message ?? err);
    if (msg === last) return;
    last = msg;
    const log = logger?.();
    if (log !== undefined) {
      try {
        log.error({ err, source: tag() }, msg);
        return;
      } catch { /* a throwing logger falls back to stderr */ }
    }
    console.error(`[${tag()}] ${msg}`);
  };
}
