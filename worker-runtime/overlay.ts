import type { Entity } from '../bus/entities.js';
import type { Bus } from '../bus/bus.js';
import type { RedisClient } from '../bus/connection.js';
import { InvalidOptionError, WriteModeError } from '../bus/errors.js';
import { writeBehindKeys, writeBehindShared, type BusKeys } from '../bus/keys.js';
import { parsePending, pendingToRow } from '../bus/write-behind/pending.js';
import { readDefinitions } from '../bus/write-behind/registry.js';
import type { Loader } from './types.js';

// The read side of write-behind, in the core because every cache with a bus needs it (I6 read
// your writes everywhere): a miss on a row pending in Redis answers the pending row, whether or
// not this process ever imported cachebus/write-behind. Needs Redis only (no bullmq, no pg).

/** What `write` resolves with. */
export interface WriteResult {
  readonly id: string;
  /** The row's version, a decimal string (as `pg` returns bigint). */
  readonly version: string;
}

/** A write-behind handle as the overlay knows it (cachebus/write-behind's WriteBehindEntity). */
export interface BehindHandle {
  readonly entity: Entity;
  write(row: Record<string, unknown>): Promise<WriteResult>;
}

/** What the overlay needs of a cache. */
export interface OverlayHost {
  readonly bus: Bus | undefined;
  setMissHook(hook: ((key: string, loader: Loader<any>) => Loader<any>) | undefined): void;
}

type Row = Record<string, unknown>;

interface Waiter { readonly id: string; readonly loader: Loader<{}>; resolve(v: unknown): void; reject(e: unknown): void }

/** A write-behind entity as the overlay reader knows it: from a local writeBehind() or from Redis. */
interface Known { readonly name: string; readonly entity: Entity | undefined; readonly overlay: string }

/** How often every cache re-reads the write-behind entities registered in Redis. */
const kRefreshMs = 1_000;

/**
 * The miss hook of one cache: a miss on `<entity>:<id>` of a write-behind entity reads the
 * pending overlay first (one HMGET per entity per tick) and calls the original loader only
 * when no row is pending. Overlay strictly BEFORE Postgres: the flusher deletes an overlay row
 * only after its COMMIT, so "not pending" means Postgres already has it. Every cache with a bus
 * has one (installed at open), knowing the write-behind entities registered in Redis (read at
 * open and every second) as well as the ones it writes itself.
 */
export class OverlayHook {
  readonly handles = new Map<string, BehindHandle>();
  readonly known = new Map<string, Known>();
  readonly #client: RedisClient;
  readonly #keys: BusKeys;
  #batch = new Map<Known, Waiter[]>();

  constructor(client: RedisClient, keys: BusKeys) {
    this.#client = client;
    this.#keys = keys;
  }

  /** Knows `entity` as write-behind (a local writer's definition wins over Redis's). */
  add(entity: Entity, local: boolean): void {
    if (!local && this.handles.has(entity.name)) return;
    this.known.set(entity.name, { name: entity.name, entity, overlay: writeBehindKeys(this.#keys, entity.name).overlay });
    this.#probes.delete(entity.name);
  }

  /** Reads the entities registered in Redis (invalid ones are ignored: the flusher reports them). */
  async refresh(): Promise<void> {
    for (const e of await readDefinitions(this.#client, writeBehindShared(this.#keys).entities, () => undefined)) this.add(e, false);
  }

  readonly hook = (key: string, loader: Loader<{}>): Loader<{}> => {
    const i = key.indexOf(':');
    if (i <= 0) return loader;
    const name = key.slice(0, i);
    let k = this.known.get(name);
    let probe = false;
    if (k === undefined) {
      // Not known as write-behind (yet): the entity may have been registered a moment ago. Its
      // overlay is read anyway, side by side with the loader (no added latency): a pending row wins.
      if (!IDENT.test(name)) return loader;
      k = this.#probes.get(name);
      if (k === undefined) this.#probes.set(name, (k = { name, entity: undefined, overlay: writeBehindKeys(this.#keys, name).overlay }));
      probe = true;
    }
    const id = key.slice(i + 1);
    const known = k;
    return () => new Promise((resolve, reject) => {
      if (this.#batch.size === 0) queueMicrotask(() => this.#read());
      let list = this.#batch.get(known);
      if (list === undefined) this.#batch.set(known, (list = []));
      let load = loader;
      if (probe) {
        const started = Promise.resolve().then(() => loader());
        started.catch(() => undefined);
        load = () => started;
      }
      list.push({ id, loader: load, resolve, reject });
    });
  };

  readonly #probes = new Map<string, Known>();

  #read(): void {
    const batch = this.#batch;
    this.#batch = new Map();
    for (const [k, waiters] of batch) {
      this.#client.hmget(k.overlay, ...waiters.map((x) => x.id)).then(
        async (stored) => {
          let entity = k.entity;
          if (entity === undefined && stored.some((s) => s !== null)) {
            // A pending row of an entity this cache did not know yet: learn it now.
            await this.refresh().catch(() => undefined);
            entity = this.known.get(k.name)?.entity;
          }
          // Loaders of the rows not pending are called together, so batching loaders still batch.
          waiters.forEach((x, i) => {
            const s = stored[i];
            if (s !== null && s !== undefined && entity !== undefined) {
              try {
                x.resolve(pendingToRow(entity, parsePending(x.id, s)));
              } catch (err) {
                x.reject(err);
              }
              return;
            }
            try {
              x.resolve(x.loader());
            } catch (err) {
              x.reject(err);
            }
          });
        },
        // Redis unreachable: fail the read rather than serve a Postgres row that may be older.
        (err: unknown) => { for (const x of waiters) x.reject(err); },
      );
    }
  }
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

const hooks = new WeakMap<object, OverlayHook>();

/** The overlay hook of a cache (created, installed and refreshed once per cache). */
export async function overlayOf(cache: OverlayHost): Promise<OverlayHook | undefined> {
  const bus = cache.bus;
  if (bus === undefined) return undefined;
  let hook = hooks.get(cache);
  if (hook !== undefined) return hook;
  hook = new OverlayHook(bus.client, bus.keys);
  hooks.set(cache, hook);
  cache.setMissHook(hook.hook);
  await hook.refresh();
  return hook;
}

/**
 * Run by every cache with a bus at the end of open(): it reads the overlay of every write-behind
 * entity of its namespace (I6), whether or not it ever calls writeBehind(). Returns what to run
 * at close.
 */
export async function openOverlay(cache: OverlayHost): Promise<(() => Promise<void>) | undefined> {
  const hook = await overlayOf(cache);
  if (hook === undefined) return undefined;
  const timer = setInterval(() => { hook.refresh().catch(() => undefined); }, kRefreshMs);
  timer.unref();
  return async () => { clearInterval(timer); };
}

/**
 * Throws WriteModeError when `entity` is written behind Postgres in this cache's namespace (as
 * far as this cache knows: its own writeBehind() calls and the registry in Redis). Write-through
 * writes of such an entity would not be ordered with its pending rows.
 */
export function assertWriteThrough(cache: object, entity: string, operation: string): void {
  if (hooks.get(cache)?.known.has(entity)) throw new WriteModeError(entity, operation);
}

/**
 * The write-behind handle `writeBehind` registered for an entity of this cache, or undefined.
 * `entity(cache, name).upsert(row, { mode: 'write-behind' })` goes through it.
 */
export function writeBehindOf(cache: object, entity: string): BehindHandle | undefined {
  return hooks.get(cache)?.handles.get(entity);
}

/**
 * `upsert(row, { mode: 'write-behind' })` of an entity handle: writes the row behind Postgres and
 * resolves with it as stored (version set). InvalidOptionError if `writeBehind(cache, handle)`
 * was not called for the entity.
 */
export async function upsertBehind<R extends object>(cache: object, entity: string, row: R): Promise<R> {
  const h = writeBehindOf(cache, entity);
  if (h === undefined) {
    throw new InvalidOptionError(`entity ${entity} is not write-behind on this cache: call writeBehind(cache, entity(cache, ...)) first (cachebus/write-behind)`);
  }
  const { version } = await h.write(row as Row);
  return { ...row, [h.entity.version!]: version };
}
