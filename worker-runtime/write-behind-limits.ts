/**
 * Each cache's write-behind entities and their `maxPending`, for the metrics: the
 * `cachebus_writebehind_max_pending` gauge lets an alert compare the pending rows (read by the
 * sidecar) with the limit the writers enforce. A module of its own, with no imports, so the
 * metrics do not load the write-behind code (or BullMQ).
 */
const limits = new WeakMap<object, Map<string, number>>();

export function recordMaxPending(cache: object, entity: string, maxPending: number): void {
  let m = limits.get(cache);
  if (m === undefined) limits.set(cache, (m = new Map()));
  m.set(entity, maxPending);
}

export function maxPendingOf(cache: object): ReadonlyMap<string, number> {
  return limits.get(cache) ?? new Map();
}
