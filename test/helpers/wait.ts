import type { EventEmitter } from 'node:events';

/** Resolves with the first `name` event whose payload passes `filter`; rejects after `timeoutMs`. */
export function waitForEvent<T = unknown>(
  emitter: EventEmitter,
  name: string,
  filter: (payload: T) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(name, on);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for event "${name}"`));
    }, timeoutMs);
    const on = (payload: T): void => {
      if (!filter(payload)) return;
      clearTimeout(timer);
      emitter.off(name, on);
      resolve(payload);
    };
    emitter.on(name, on);
  });
}

/**
 * Re-checks `check` on every turn of the event loop (with a short pause between) until it
 * returns a truthy value, or throws after `timeoutMs`. A deadline, not a sleep: it returns as
 * soon as the condition holds.
 */
export async function until<T>(check: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}
