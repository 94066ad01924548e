import { InvalidOptionError } from '../../bus/errors.js';
import { type Linked, positive, Queue, requireSizeOf } from './fifo.js';
import type { EvictReason, LocalStore, StoreOptions } from './types.js';

/** Most distinct per-entry TTLs given a lane of their own; further ones share `overflow`. */
const MAX_LANES = 8;
/** Expired entries dropped per `set`, so expiry costs O(1) per write however many are due. */
const SWEEP = 8;

interface Entry<V> extends Linked<Entry<V>> {
  readonly key: string;
  value: V;
  /** Bytes charged for the entry (0 without sizeOf). */
  size: number;
  /** Date.now() after which the entry is expired. */
  expiresAt: number;
  lane: Lane<V>;
}

/** Entries in order of their last `set`; for a single TTL that is also expiry order. */
class Lane<V> extends Queue<Entry<V>> {
  /** The TTL every entry of the lane has; -1 for the mixed overflow lane. */
  constructor(readonly ttl: number) {
    super();
  }
}

/**
 * TTL-only store: no recency or frequency; `get` does not extend an entry's life, `set`
 * renews it. Entries expire `ttl` ms (or their per-entry ttl) after their last `set`, and are
 * dropped lazily on get/peek and up to SWEEP per `set` (soonest first), reported as `expire`.
 * With maxEntries/maxBytes, a full store evicts the entry that expires soonest.
 *
 * Finding "soonest" in O(1): entries live in lanes, one per TTL value, each a queue in
 * order of `set`. Since every entry of a lane has the same TTL, a lane's order is its expiry
 * order (given a clock that does not run backwards), so its head is its soonest; the store's
 * soonest is the earliest of the lane heads. Entries with the default TTL share one lane that
 * always exists; each distinct per-entry TTL gets a lane of its own, dropped when it empties,
 * up to MAX_LANES. Beyond that, entries with further TTLs share one `overflow` lane in order
 * of `set`, whose head is only approximately its soonest: an overflow entry can be evicted
 * before another that expires sooner, or linger expired until read or until it reaches the head.
 * Each operation looks at no more than MAX_LANES + 2 lane heads (SWEEP times on `set`), so is O(1).
 */
export function createTtlStore<V extends {}>(opts: StoreOptions<V>): LocalStore<V> {
  const ttl = opts.ttl;
  if (typeof ttl !== 'number' || !(ttl > 0)) {
    throw new InvalidOptionError('options.ttl must be a positive number of ms for policy "ttl"');
  }
  requireSizeOf(opts);
  const { sizeOf, onEvict } = opts;
  const maxEntries = positive(opts.maxEntries);
  const maxBytes = positive(opts.maxBytes);
  const map = new Map<string, Entry<V>>();
  const defaultLane = new Lane<V>(ttl);
  /** Lanes for per-entry TTLs other than the default, by TTL. */
  const lanes = new Map<number, Lane<V>>();
  let overflow: Lane<V> | null = null;
  let bytes = 0;

  function laneFor(life: number): Lane<V> {
    if (life === ttl) return defaultLane;
    let lane = lanes.get(life);
    if (lane) return lane;
    if (lanes.size < MAX_LANES) {
      lane = new Lane<V>(life);
      lanes.set(life, lane);
      return lane;
    }
    return (overflow ??= new Lane<V>(-1));
  }

  function unlink(e: Entry<V>): void {
    const lane = e.lane;
    lane.remove(e);
    if (lane.head !== null || lane === defaultLane) return;
    if (lane === overflow) overflow = null;
    else lanes.delete(lane.ttl);
  }

  function remove(e: Entry<V>): void {
    map.delete(e.key);
    unlink(e);
    bytes -= e.size;
  }

  function drop(e: Entry<V>, reason: EvictReason): void {
    remove(e);
    onEvict?.(e.key, e.value, reason);
  }

  function read(key: string): V | undefined {
    const e = map.get(key);
    if (e === undefined) return undefined;
    if (Date.now() > e.expiresAt) {
      drop(e, 'expire');
      return undefined;
    }
    return e.value;
  }

  /** The earlier-expiring of `best` and the head of `lane` (its next entry when that is `keep`). */
  function earlier(best: Entry<V> | null, lane: Lane<V>, keep: Entry<V>): Entry<V> | null {
    const head = lane.head === keep ? keep.next : lane.head;
    return head !== null && (best === null || head.expiresAt < best.expiresAt) ? head : best;
  }

  /** The entry expiring soonest other than `keep` (approximately, for overflow entries). */
  function soonest(keep: Entry<V>): Entry<V> | null {
    let best = earlier(null, defaultLane, keep);
    for (const lane of lanes.values()) best = earlier(best, lane, keep);
    return overflow ? earlier(best, overflow, keep) : best;
  }

  function trim(keep: Entry<V>, now: number): void {
    for (let i = 0; i < SWEEP; i++) {
      const e = soonest(keep);
      if (e === null || now <= e.expiresAt) break;
      drop(e, 'expire');
    }
    while ((maxEntries && map.size > maxEntries) || (maxBytes && bytes > maxBytes)) {
      const e = soonest(keep);
      if (e === null) break;
      drop(e, now > e.expiresAt ? 'expire' : 'evict');
    }
  }

  return {
    get: read,
    peek: read,
    set(key, value, entryTtl) {
      const size = sizeOf ? sizeOf(value, key) : 0;
      let e = map.get(key);
      if (maxBytes && size > maxBytes) {
        if (e) remove(e);
        return false;
      }
      const now = Date.now();
      const life = entryTtl !== undefined && entryTtl > 0 ? entryTtl : ttl;
      const cost = sizeOf ? Math.max(1, size) : 0;
      if (e) {
        // Renewed: its expiry is now the latest of its (maybe new) lane, so it goes to the tail.
        // Unlinked before picking the lane, as unlinking may drop the lane it would pick.
        unlink(e);
        bytes += cost - e.size;
        e.value = value;
        e.size = cost;
        e.expiresAt = now + life;
        e.lane = laneFor(life);
      } else {
        e = { key, value, size: cost, expiresAt: now + life, lane: laneFor(life), prev: null, next: null };
        map.set(key, e);
        bytes += cost;
      }
      e.lane.push(e);
      trim(e, now);
      return true;
    },
    delete(key) {
      const e = map.get(key);
      if (e === undefined) return false;
      remove(e);
      return true;
    },
    clear() {
      map.clear();
      defaultLane.clear();
      lanes.clear();
      overflow = null;
      bytes = 0;
    },
    *keys() {
      const now = Date.now();
      for (const e of map.values()) if (now <= e.expiresAt) yield e.key;
    },
    get size() { return map.size; },
    get bytes() { return bytes; },
  };
}
