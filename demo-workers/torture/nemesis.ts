import type pg from 'pg';
import { Redis } from 'ioredis';
import { now, type FaultOp, type History } from './history.js';
import type { WorkerStats } from './layout.js';
import { Prng } from './prng.js';
import type { StallProxy } from './proxy.js';
import { describe, type ScheduledFault } from './schedule.js';
import type { TortureRedis, TortureSidecar } from './servers.js';
import { call, type Slots } from './workload.js';

/** A worker that must show a detected gap (its gap counter above `before`) by `deadline`, unless it restarted. */
export interface GapObligation { readonly slot: number; readonly pid: number; readonly before: readonly number[]; readonly why: string; readonly at: number }
/** `caches`: which caches of the worker (0 main, 1… its threads) counted no gap. */
export interface GapFailure extends GapObligation { readonly detail: string; readonly caches: readonly number[] }

export interface NemesisContext {
  readonly seed: number;
  readonly slots: Slots;
  readonly history: History;
  readonly redis: TortureRedis;
  /** The sidecars (flusher + outbox relay each); kill-sidecar takes one of them down. */
  readonly sidecars: readonly TortureSidecar[];
  /** Admin Postgres pool (its own application_name: never terminated by pg-terminate). */
  readonly admin: pg.Pool;
  /** application_name of every connection of this run that pg-terminate may cut. */
  readonly appName: string;
  readonly stream: string;
  readonly namespace: string;
  /** Marks a worker pid as killed by the nemesis (so its exit is no crash). */
  readonly expectExit: (pid: number) => void;
  /** The proxy between each worker slot and Redis. */
  readonly proxies: readonly StallProxy[];
  /** The proxy every connection of the app (workers, sidecar, outside writer) takes to Postgres. */
  readonly pgProxy: StallProxy;
  /** The relay hub's process and the slot of the worker it feeds (its main cache reads through the hub only). */
  readonly hub: { readonly slot: number; pid(): number | undefined };
}

/** `caches`: which caches of the worker cannot read meanwhile (all when undefined). */
interface Frozen { readonly pid: number; readonly added: number; readonly gaps: readonly number[] | undefined; resumed: Promise<number>; readonly caches?: readonly number[] }

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Executes a schedule against the running system; records every fault (and what it skipped) in the history. */
export class Nemesis {
  readonly gapFailures: GapFailure[] = [];
  /** Gap obligations made / met (a worker restarted meanwhile is neither). */
  readonly gapChecks = { made: 0, met: 0 };
  readonly #checks: Promise<void>[] = [];
  readonly #frozen = new Map<number, Frozen>();
  readonly #jumped = new Set<number>();
  #redisBusy: Promise<void> | undefined;
  readonly #sidecarBusy = new Set<number>();
  #admin: Redis | undefined;

  constructor(readonly ctx: NemesisContext) {}

  #redis(): Redis {
    if (this.#admin === undefined) {
      this.#admin = new Redis(this.ctx.redis.url, { maxRetriesPerRequest: 1, connectTimeout: 1_000, retryStrategy: () => 100 });
      this.#admin.on('error', () => undefined);
    }
    return this.#admin;
  }

  async run(schedule: readonly ScheduledFault[], t0: number, signal: AbortSignal): Promise<void> {
    const running: Promise<void>[] = [];
    for (const [i, f] of schedule.entries()) {
      const wait = t0 + f.at - now();
      if (wait > 0) await sleep(wait);
      if (signal.aborted) break;
      const rng = new Prng((this.ctx.seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
      running.push(this.#execute(f, rng).catch((err: unknown) => {
        this.ctx.history.fault(f.fault, describe(f), `failed: ${(err as Error)?.message ?? err}`);
      }));
    }
    await Promise.all(running);
  }

  /** Waits for every gap obligation to be met or to fail. */
  async settle(): Promise<void> {
    await Promise.all(this.#checks);
    this.#admin?.disconnect();
  }

  /**
   * Runs `body` with worker `slot` counted as frozen: it cannot read meanwhile, so it owes the gaps
   * of whatever it misses (checked when it resumes). `start` records the fault once the worker's
   * counters are taken.
   */
  async #frozenDuring(slot: number, pid: number, caches: readonly number[] | undefined, start: () => FaultOp, body: () => Promise<void>): Promise<void> {
    const gaps = (await this.#stats(slot))?.gaps;
    let resume!: (t: number) => void;
    const fr: Frozen = { pid, added: await this.#entriesAdded(), gaps, resumed: new Promise((r) => { resume = r; }), ...(caches ? { caches } : {}) };
    this.#frozen.set(slot, fr);
    const op = start();
    try {
      await body();
    } finally {
      this.#frozen.delete(slot);
      op.end = now();
      resume(now());
    }
  }

  async #stats(slot: number): Promise<WorkerStats | undefined> {
    const s = this.ctx.slots()[slot];
    if (s === undefined) return undefined;
    return call<WorkerStats>(s.port, 'GET', '/stats', 1_000).catch(() => undefined);
  }

  async #entriesAdded(): Promise<number> {
    try {
      const info = await this.#redis().call('XINFO', 'STREAM', this.ctx.stream) as unknown[];
      const i = info.indexOf('entries-added');
      return i < 0 ? 0 : Number(info[i + 1]);
    } catch {
      return 0; // no stream (yet)
    }
  }

  /** A worker that must detect a gap: polls its /stats until its gap counter moved, for up to 10 s after `from`. */
  #oblige(o: GapObligation, from: Promise<number>): void {
    this.gapChecks.made++;
    this.#checks.push((async () => {
      const start = await from;
      const deadline = start + 10_000;
      for (;;) {
        const s = this.ctx.slots()[o.slot];
        if (s === undefined || s.pid !== o.pid) return; // restarted: a new process starts empty
        const st = await this.#stats(o.slot);
        // `before` -1: that cache is not obliged (any count, even 0, is above it).
        const missing = st === undefined || st.pid !== o.pid ? o.before.flatMap((b, k) => (b < 0 ? [] : [k])) : o.before.map((b, k) => ((st.gaps[k] ?? -1) > b ? -1 : k)).filter((k) => k >= 0);
        if (missing.length === 0) { this.gapChecks.met++; return; }
        if (now() > deadline) {
          this.gapFailures.push({ ...o, caches: missing, detail: `no gap counted within 10 s by cache ${missing.map((k) => (k === 0 ? 'main' : `thread ${k}`)).join(', ')} (gaps ${st?.gaps.join('/') ?? '?'}, was ${o.before.join('/')})` });
          return;
        }
        await sleep(200);
      }
    })());
  }

  /** The stream lost entries some worker never read: every frozen worker with ≥ `minUnread` entries added since it froze must detect it. */
  #obligeFrozen(why: string, minUnread: number, added: number): void {
    for (const [slot, fr] of this.#frozen) {
      if (fr.gaps !== undefined && added - fr.added >= minUnread && fr.caches?.length !== 0) {
        // A cache that kept reading (the relayed worker's thread while its hub is stopped, a
        // thread through its worker's block-loop) need not see a gap; with none left, nothing is owed.
        const before = fr.caches === undefined ? fr.gaps : fr.gaps.map((g, k) => (fr.caches!.includes(k) ? g : -1));
        this.#oblige({ slot, pid: fr.pid, before, why, at: now() }, fr.resumed);
      }
    }
  }

  async #execute(f: ScheduledFault, rng: Prng): Promise<void> {
    const h = this.ctx.history;
    const slot = f.target;
    switch (f.fault) {
      case 'kill-worker': {
        const s = this.ctx.slots()[slot];
        if (s === undefined) { h.fault(f.fault, `w${slot}`, 'worker not running'); return; }
        const op = h.fault(f.fault, `w${slot} pid ${s.pid}`);
        this.ctx.expectExit(s.pid);
        try { process.kill(s.pid, 'SIGKILL'); } catch { /* gone already */ }
        op.end = now();
        return;
      }
      case 'stop-worker':
      case 'block-loop': {
        const s = this.ctx.slots()[slot];
        if (s === undefined || this.#frozen.has(slot)) { h.fault(f.fault, `w${slot}`, 'worker not running or already frozen'); return; }
        // Which caches cannot read meanwhile (undefined: all). SIGSTOP freezes the whole process;
        // block-loop only the main thread's event loop: the piscina thread (1) has its own loop and
        // its own Redis connection, keeps reading, and misses nothing. The relayed worker's main
        // cache (0) reads through its hub, which keeps reading while the worker is frozen, and IPC
        // keeps every message: it misses nothing either.
        const relayed = slot === this.ctx.hub.slot;
        const caches = f.fault === 'stop-worker' ? (relayed ? [1] : undefined) : (relayed ? [] : [0]);
        await this.#frozenDuring(slot, s.pid, caches, () => h.fault(f.fault, `w${slot} pid ${s.pid} ${f.durationMs}ms`), async () => {
          try {
            if (f.fault === 'stop-worker') {
              process.kill(s.pid, 'SIGSTOP');
              await sleep(f.durationMs);
              try { process.kill(s.pid, 'SIGCONT'); } catch { /* killed meanwhile */ }
            } else {
              await call(s.port, 'POST', `/block/${f.durationMs}`, 2_000);
              await sleep(f.durationMs);
            }
          } catch {
            // the worker died meanwhile
          }
        });
        return;
      }
      case 'stall-redis': {
        const p = this.ctx.proxies[slot];
        const s = this.ctx.slots()[slot];
        if (p === undefined || p.stalled || s === undefined || this.#frozen.has(slot)) { h.fault(f.fault, `w${slot}`, 'already stalled or frozen, or not running'); return; }
        // A stalled worker can read nothing either: it is "frozen" for the gap obligations.
        await this.#frozenDuring(slot, s.pid, undefined, () => h.fault(f.fault, `w${slot} ${f.durationMs}ms`), () => p.stall(f.durationMs));
        return;
      }
      case 'stop-hub': {
        // The hub's host process freezes; the worker it relays to keeps running. Replies pile up
        // in the hub's sockets, its beats stop: the relayed cache must stop serving within its
        // maxStaleMs (I3), and must not trust the hub's stale proofs when it resumes.
        const pid = this.ctx.hub.pid();
        const hs = this.ctx.hub.slot;
        const s = this.ctx.slots()[hs];
        if (pid === undefined || s === undefined || this.#frozen.has(hs)) { h.fault(f.fault, '', 'hub or its worker not running, or worker already frozen'); return; }
        await this.#frozenDuring(hs, s.pid, [0], () => h.fault(f.fault, `hub pid ${pid} (feeds w${hs}) ${f.durationMs}ms`), async () => {
          process.kill(pid, 'SIGSTOP');
          try {
            await sleep(f.durationMs);
          } finally {
            try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
          }
        });
        return;
      }
      case 'clock-jump': {
        const s = this.ctx.slots()[slot];
        if (s === undefined || this.#jumped.has(slot)) { h.fault(f.fault, `w${slot}`, 'worker not running or its clock already jumped'); return; }
        const offset = (rng.int(0, 1) === 0 ? -1 : 1) * rng.int(60_000, 600_000);
        this.#jumped.add(slot);
        const op = h.fault(f.fault, `w${slot} pid ${s.pid} ${offset > 0 ? '+' : ''}${(offset / 1000).toFixed(1)}s for ${f.durationMs}ms`);
        try {
          await call(s.port, 'POST', `/clock/${offset}`, 2_000);
          await sleep(f.durationMs);
        } finally {
          // Jump back; a worker frozen meanwhile answers later, a restarted one starts on the true clock.
          for (const deadline = now() + 15_000; ;) {
            const cur = this.ctx.slots()[slot];
            if (cur === undefined || cur.pid !== s.pid) break;
            if (await call(cur.port, 'POST', '/clock/0', 2_000).then(() => true, () => false)) break;
            if (now() > deadline) break;
            await sleep(200);
          }
          this.#jumped.delete(slot);
          op.end = now();
        }
        return;
      }
      case 'pg-jitter': {
        // Each request waits its own 0…max ms (in order per connection): a flusher's upsert of
        // an older version may now reach Postgres after another loop's upsert of a newer one.
        if (this.ctx.pgProxy.jittering) { h.fault(f.fault, '', 'already jittering'); return; }
        const max = rng.int(500, 3_000);
        const op = h.fault(f.fault, `${f.durationMs}ms, requests delayed 0–${max}ms`);
        await this.ctx.pgProxy.jitter(f.durationMs, max, () => rng.next());
        await sleep(max); // requests queued behind the last delayed one: the fault lasts until they are sent
        op.end = now();
        return;
      }
      case 'pg-refuse': {
        if (this.ctx.pgProxy.refusing) { h.fault(f.fault, '', 'already refusing'); return; }
        const op = h.fault(f.fault, `${f.durationMs}ms`);
        await this.ctx.pgProxy.refuse(f.durationMs);
        op.end = now();
        return;
      }
      case 'kill-sidecar': {
        const which = slot % this.ctx.sidecars.length;
        const sidecar = this.ctx.sidecars[which]!;
        if (this.#sidecarBusy.has(which)) { h.fault(f.fault, `sidecar ${which}`, 'sidecar already down'); return; }
        this.#sidecarBusy.add(which);
        try {
          const op = h.fault(f.fault, `sidecar ${which} down ${f.durationMs}ms`);
          const down = now();
          await sidecar.kill();
          await sleep(f.durationMs);
          await sidecar.start();
          op.end = now();
          h.sidecarDown.push([down, op.end]);
        } finally {
          this.#sidecarBusy.delete(which);
        }
        return;
      }
      case 'client-kill': {
        const list = String(await this.#redis().call('CLIENT', 'LIST', 'TYPE', 'normal')).split('\n');
        const ids = list.filter((l) => l.includes(' name=cachebus')).map((l) => /(?:^|\s)id=(\d+)/.exec(l)?.[1]).filter((x): x is string => x !== undefined);
        const names: string[] = [];
        for (let k = 0; k < f.target && ids.length > 0; k++) {
          const id = ids.splice(rng.int(0, ids.length - 1), 1)[0]!;
          names.push(/ name=(\S+)/.exec(list.find((l) => l.includes(`id=${id} `)) ?? '')?.[1] ?? id);
          await this.#redis().call('CLIENT', 'KILL', 'ID', id).catch(() => 0);
        }
        h.fault(f.fault, names.join(',')).end = now();
        return;
      }
      case 'stream-del':
      case 'stream-trim':
      case 'stream-xdel': {
        // Obligations: what each running worker's gap counter was just before.
        const before = await Promise.all(this.ctx.slots().map(async (s, i) => (s === undefined || this.#frozen.has(i) ? undefined : { slot: i, pid: s.pid, st: await this.#stats(i) })));
        const added = await this.#entriesAdded();
        const r = this.#redis();
        let detail: string;
        if (f.fault === 'stream-del') detail = `DEL ${await r.del(this.ctx.stream)}`;
        else if (f.fault === 'stream-trim') detail = `XTRIM MAXLEN 0: ${await r.xtrim(this.ctx.stream, 'MAXLEN', 0)} entries`;
        else {
          const last = await r.xrevrange(this.ctx.stream, '+', '-', 'COUNT', f.target);
          detail = `XDEL ${last.length ? await r.xdel(this.ctx.stream, ...last.map((e) => e[0])) : 0} newest`;
        }
        const op = h.fault(f.fault, detail);
        if (f.fault === 'stream-del') {
          // The stream is gone: nobody can prove continuity across it.
          for (const b of before) if (b?.st !== undefined && b.st.pid === b.pid) this.#oblige({ slot: b.slot, pid: b.pid, before: b.st.gaps, why: f.fault, at: op.start }, Promise.resolve(now()));
        }
        this.#obligeFrozen(f.fault, f.fault === 'stream-xdel' ? f.target + 4 : 4, added);
        return;
      }
      case 'redis-restart':
      case 'redis-wipe': {
        if (this.#redisBusy !== undefined) { h.fault(f.fault, '', 'redis already restarting'); return; }
        const before = f.fault === 'redis-wipe'
          ? await Promise.all(this.ctx.slots().map(async (s, i) => (s === undefined ? undefined : { slot: i, pid: s.pid, st: await this.#stats(i) })))
          : [];
        const op = h.fault(f.fault, '');
        this.#redisBusy = f.fault === 'redis-restart' ? this.ctx.redis.restart() : this.ctx.redis.wipe();
        try {
          await this.#redisBusy;
        } finally {
          this.#redisBusy = undefined;
          op.end = now();
        }
        for (const b of before) {
          if (b?.st === undefined || b.st.pid !== b.pid) continue;
          const fr = this.#frozen.get(b.slot);
          this.#oblige({ slot: b.slot, pid: b.pid, before: b.st.gaps, why: f.fault, at: op.start }, fr?.resumed ?? Promise.resolve(now()));
        }
        return;
      }
      case 'pg-terminate': {
        const r = await this.ctx.admin.query<{ pid: number }>(
          `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE $1 || '%' AND pid <> pg_backend_pid() ORDER BY random() LIMIT $2`,
          [this.ctx.appName, f.target]);
        h.fault(f.fault, `${r.rowCount} backends`).end = now();
        return;
      }
    }
  }
}
