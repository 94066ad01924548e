import { Redis } from 'ioredis';
import { hasRedisServer, OwnedRedis } from '../redis-server.js';
import type { Scenario, ScenarioContext } from '../scenario.js';

/** Per-run state: the redis-server this scenario may restart, and whether it started it itself. */
const state = new WeakMap<ScenarioContext, { redis: OwnedRedis | undefined; private: boolean; restarted: boolean }>();

/**
 * Kills, with CLIENT KILL, one reader connection and one command connection of the demo's
 * caches (picked at random among the workers' and threads'). Returns how many were killed.
 */
async function killBusConnections(url: string, namespace: string): Promise<number> {
  const admin = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  admin.on('error', () => undefined);
  try {
    const lines = (String(await admin.call('CLIENT', 'LIST', 'TYPE', 'normal'))).split('\n');
    let killed = 0;
    for (const role of ['reader', 'cmd']) {
      const ids = lines.filter((l) => l.includes(` name=cachebus:${namespace}:${role} `)).map((l) => /(?:^|\s)id=(\d+)/.exec(l)?.[1]);
      const id = ids[Math.floor(Math.random() * ids.length)];
      if (id !== undefined) killed += Number(await admin.call('CLIENT', 'KILL', 'ID', id));
    }
    return killed;
  } finally {
    admin.disconnect();
  }
}

/** Deletes the invalidation stream; the next publish re-creates it under a new epoch. */
async function deleteStream(url: string, prefix: string, namespace: string): Promise<number> {
  const admin = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  admin.on('error', () => undefined);
  try {
    return await admin.del(`${prefix}:{${namespace}}:inval`);
  } finally {
    admin.disconnect();
  }
}

/** Stops one worker with SIGSTOP for `ms` (longer than maxStaleMs), then lets it go on. */
async function freezeOneWorker(pids: number[], ms: number, signal: AbortSignal): Promise<number | undefined> {
  const pid = pids[Math.floor(Math.random() * pids.length)];
  if (pid === undefined) return undefined;
  process.kill(pid, 'SIGSTOP');
  try {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void { clearTimeout(timer); signal.removeEventListener('abort', done); resolve(); }
      signal.addEventListener('abort', done);
    });
  } finally {
    try { process.kill(pid, 'SIGCONT'); } catch { /* it is gone */ }
  }
  return pid;
}

/**
 * Faults mid-run: at 25 % of the load one cache's bus connections are killed; at 35 % the
 * invalidation stream is deleted (publishers re-create it under a new epoch, so every reader
 * must clear); at 40 % one worker is stopped with SIGSTOP for 1.5 × maxStaleMs (it must not
 * serve what it held once it resumes); at 50 % Redis is killed (-9) and restarted empty on the
 * same port, so every reader must detect the gap and clear its cache. Restarting needs a redis-server the demo owns: its own throwaway one, or
 * (when Redis was found on 127.0.0.1:6379) a private one for this scenario. With REDIS_URL
 * set the demo leaves that server alone and kills connections twice instead.
 */
export const chaos: Scenario = {
  name: 'chaos',
  summary: 'bus connections killed, stream re-created, a worker frozen, Redis restarted: gaps detected, caches cleared, still bounded',
  bus: true,
  expect: 'bounded',

  async setup(ctx) {
    if (ctx.infra.ownedRedis) {
      state.set(ctx, { redis: ctx.infra.ownedRedis, private: false, restarted: false });
    } else if (ctx.infra.redisSource === 'loopback' && hasRedisServer()) {
      const redis = await OwnedRedis.start();
      ctx.redisUrl = redis.url;
      state.set(ctx, { redis, private: true, restarted: false });
    } else {
      state.set(ctx, { redis: undefined, private: false, restarted: false });
      ctx.notes.push('Redis not restarted (REDIS_URL is not the demo\'s own): CLIENT KILL only');
    }
  },

  async during(ctx, run) {
    const s = state.get(ctx);
    const redis = s?.redis;
    await run.at(0.25);
    if (run.signal.aborted) return;
    const killed = await killBusConnections(ctx.redisUrl, ctx.namespace);
    ctx.notes.push(`CLIENT KILL ${killed} bus conns`);
    await run.at(0.35);
    if (run.signal.aborted) return;
    if (await deleteStream(ctx.redisUrl, ctx.infra.prefix, ctx.namespace) > 0) ctx.notes.push('stream deleted and re-created');
    await run.at(0.4);
    if (run.signal.aborted) return;
    const frozen = await freezeOneWorker(run.workerPids(), Math.floor(ctx.options.boundMs * 0.75), run.signal);
    if (frozen !== undefined) ctx.notes.push(`worker ${frozen} stopped (SIGSTOP) for ${Math.floor(ctx.options.boundMs * 0.75)} ms`);
    await run.at(0.5);
    if (run.signal.aborted) return;
    if (redis) {
      await redis.restart();
      s!.restarted = true;
      ctx.notes.push('Redis restarted');
    } else {
      ctx.notes.push(`CLIENT KILL ${await killBusConnections(ctx.redisUrl, ctx.namespace)} more`);
    }
  },

  /**
   * I2: after the restart every cache must detect the gap (and clear itself) once its reader is
   * back. Readers reconnect with backoff, so this waits up to 10 s after the load for all of them.
   */
  async verify(ctx, _latest, workers) {
    if (!state.get(ctx)?.restarted) return true;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const stats = await workers();
      const caches = stats.reduce((n, w) => n + 1 + w.threads.length, 0);
      const detected = stats.reduce((n, w) => n + (w.main.gaps.restart > 0 ? 1 : 0) + w.threads.filter((t) => t.stats.gaps.restart > 0).length, 0);
      if (caches > 0 && detected === caches) {
        ctx.notes.push(`all ${caches} caches detected the restart`);
        return true;
      }
      if (Date.now() > deadline) {
        ctx.notes.push(`${caches - detected} of ${caches} caches did not detect the restart within 10 s`);
        return false;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  },

  async teardown(ctx) {
    const s = state.get(ctx);
    if (s?.private) await s.redis?.dispose();
    state.delete(ctx);
  },
};
