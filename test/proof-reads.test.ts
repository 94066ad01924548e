/**
 * Issue 15: a reader runs the stream-info script only on a proving read (when its last proof is
 * `proofEveryMs` old), and plain XREADs in between. These tests hold the two halves of that
 * bargain: plain reads are what most reads are under traffic (Redis is asked, not a counter),
 * and a plain read never proves anything, so an entry deleted unread while the reader is between
 * proofs is still a gap before the next proof is claimed.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { busKeys } from '../bus/keys.js';
import { appendArgs, publishScript } from '../bus/lua-append.js';
import { kAnnouncedReadAt, StreamReader, type GapCause } from '../bus/reader.js';
import { streamInfoScript } from '../bus/lua-stream-info.js';
import { randomPrefix, TestRedis } from './helpers/redis.js';
import { until } from './helpers/wait.js';

let redis: TestRedis;
let raw: Redis;
let stream: string;
const readers: StreamReader[] = [];

interface Seen {
  readonly entries: string[];
  readonly gaps: { cause: GapCause; at: number }[];
  /** Proofs in the order claimed: `at` is the proving read's send time, `when` when it was claimed, `entries` how many were applied then. */
  readonly proofs: { at: number; when: number; entries: number }[];
  readonly errors: unknown[];
}

async function reader(opts: { blockMs: number; proofEveryMs: number; hintsFlowing?: () => boolean; count?: number }, onEntry?: () => void): Promise<{ r: StreamReader; seen: Seen }> {
  const seen: Seen = { entries: [], gaps: [], proofs: [], errors: [] };
  const conn = new Redis(redis.url, { maxRetriesPerRequest: null, autoResendUnfulfilledCommands: false, connectionName: 'proof-reads:reader' });
  const r = new StreamReader(conn, { stream, origin: 'reader', count: 100, maxEntryBytes: 65_536, ...opts }, {
    onEntry: (e) => { seen.entries.push(e.id); onEntry?.(); },
    onGap: (cause) => { seen.gaps.push({ cause, at: performance.now() }); },
    onBadEntry: () => undefined,
    onStatus: () => undefined,
    onCaughtUp: (at) => { seen.proofs.push({ at, when: performance.now(), entries: seen.entries.length }); },
    onError: (err) => { seen.errors.push(err); },
  });
  readers.push(r);
  await r.start();
  return { r, seen };
}

/** One chained invalidation entry, as a cachebus publisher appends it; returns its ID. */
async function publish(key: string): Promise<string> {
  const ids = await raw.evalsha(publishScript.sha, 1, stream, ...appendArgs([['v', '1', 'o', 'pub', 'k', JSON.stringify([key])]], { kind: '' })) as string[];
  return ids[0]!;
}

async function commandCalls(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of String(await raw.info('commandstats')).matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

beforeEach(async () => {
  redis = await TestRedis.start();
  raw = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  raw.on('error', () => undefined);
  stream = busKeys(randomPrefix(), 'shop').stream;
  await raw.script('LOAD', publishScript.lua);
  await raw.script('LOAD', streamInfoScript.lua);
});

afterEach(async () => {
  await Promise.all(readers.splice(0).map((r) => r.close()));
  raw.disconnect();
  await redis.dispose();
});

describe('proving reads and plain reads', () => {
  it('under traffic most reads are plain XREADs: the stream-info script runs per proof, not per entry', async () => {
    await publish('warmup');
    const { r, seen } = await reader({ blockMs: 1000, proofEveryMs: 200 });
    await raw.config('RESETSTAT');
    const before = r.reads;
    const n = 300;
    for (let i = 0; i < n; i++) {
      const id = await publish(`k${i}`);
      await until(() => seen.entries.includes(id), 5000, `entry ${i} applied`);
    }
    const reads = { total: r.reads.total - before.total, proving: r.reads.proving - before.proving };
    const calls = await commandCalls();
    // Redis agrees with the reader's count: every EVALSHA but the n publishes is a proving read's
    // script (the one in flight at RESETSTAT may or may not be counted).
    const scripts = (calls.get('evalsha') ?? 0) - n;
    expect(Math.abs(scripts - reads.proving)).toBeLessThanOrEqual(1);
    expect(calls.get('xread') ?? 0).toBeGreaterThanOrEqual(n);
    expect(reads.total).toBeGreaterThanOrEqual(n);
    // Every read proved before this change (scripts ≈ n). Now about one per 200 ms of the run,
    // plus the reads after a long wait (whose proof is then already old).
    expect(reads.proving).toBeLessThan(n / 5);
    expect(seen.gaps).toEqual([]);
    expect(seen.errors).toEqual([]);
  });

  // 'hints flowing' (options wake 'pubsub' and 'host'): between proofs the reader sends nothing
  // and waits for its next proving read; the deletion must still be found by it.
  for (const [kind, flowing] of [['chained', false], ['foreign (plain XADD)', false], ['chained', true], ['foreign (plain XADD)', true]] as const) {
    it(`an entry (${kind}) added and deleted unread while the reader is between proofs${flowing ? ', hints flowing' : ''}: a gap, and no proof claimed past it before the gap`, async () => {
      await publish('warmup');
      // A long proof interval: once a proving read returns at once, the reads for the next second are plain (or none, hints flowing).
      const { r, seen } = await reader({ blockMs: 4000, proofEveryMs: 1000, ...(flowing ? { hintsFlowing: () => true } : {}) });
      for (const w of ['w1', 'w2', 'w3']) {
        const id = await publish(w);
        await until(() => seen.entries.includes(id), 5000, `${w} applied`);
      }
      const proofsBefore = seen.proofs.length;
      const provingBefore = r.reads.proving;
      // The reader now blocks in a plain XREAD; it is woken only after EXEC, when X is already gone.
      const tx = raw.multi();
      if (kind === 'chained') tx.evalsha(publishScript.sha, 1, stream, ...appendArgs([['v', '1', 'o', 'pub', 'k', '["x"]']], { kind: '' }));
      else tx.xadd(stream, '*', 'v', '1', 'o', 'foreign', 'k', '["x"]');
      tx.eval(`local r = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) return redis.call('XDEL', KEYS[1], r[1][1])`, 1, stream);
      const deletedAt = performance.now();
      const res = await tx.exec();
      expect(res?.every(([err]) => err === null)).toBe(true);
      await until(() => seen.gaps.length > 0, 10_000, 'the gap');
      expect(seen.gaps[0]!.cause).toBe('trimmed');
      // A proving read sent after the deletion found it...
      expect(r.reads.proving).toBeGreaterThan(provingBefore);
      // ...and the plain read in flight at EXEC proved nothing: every proof claimed before the gap
      // was sent before the deletion.
      const claimedBeforeGap = seen.proofs.slice(proofsBefore).filter((p) => p.when <= seen.gaps[0]!.at);
      expect(claimedBeforeGap.filter((p) => p.at >= deletedAt)).toEqual([]);
      expect(seen.errors).toEqual([]);
    });
  }

  for (const flowing of [false, true]) it(`a plain read ends when the next proof is due${flowing ? ' (hints flowing: no plain read, a wait)' : ''}: proofs keep coming once the traffic stops`, async () => {
    await publish('warmup');
    const { seen } = await reader({ blockMs: 300, proofEveryMs: 100, ...(flowing ? { hintsFlowing: () => true } : {}) });
    for (const w of ['w1', 'w2', 'w3']) {
      const id = await publish(w);
      await until(() => seen.entries.includes(id), 5000, `${w} applied`);
    }
    const last = performance.now();
    // Proofs keep coming with no traffic, each sent after the last entry.
    await until(() => seen.proofs.filter((p) => p.at > last).length >= 3, 5000, 'three proofs after the traffic');
    expect(seen.gaps).toEqual([]);
  });

  it('a large reply is applied in slices, the event loop turning between them, and its proof is claimed only after its last entry', async () => {
    await publish('warmup');
    // Hints "flow": the reader sends only its proving reads, so the 1,000 entries come in one reply.
    let applied = 0;
    let turn = 0;
    const turns: number[] = [];
    const { seen } = await reader({ blockMs: 1000, proofEveryMs: 300, count: 2000, hintsFlowing: () => true }, () => {
      applied++;
      turns.push(turn);
      const busyUntil = performance.now() + 0.02; // a handler that takes 20 µs: the reply takes 20 ms
      while (performance.now() < busyUntil);
    });
    await until(() => seen.proofs.length >= 2, 5000, 'a proof after start');
    const n = 1000;
    const ids: string[] = [];
    const proofsBefore = seen.proofs.length;
    const appliedBefore = seen.entries.length;
    const tx = raw.multi(); // all at once: one proving read takes them all
    for (let i = 0; i < n; i++) tx.evalsha(publishScript.sha, 1, stream, ...appendArgs([['v', '1', 'o', 'pub', 'k', JSON.stringify([`k${i}`])]], { kind: '' }));
    for (const [err, res] of (await tx.exec())!) { expect(err).toBeNull(); ids.push((res as string[])[0]!); }
    let ticking = true;
    const tick = (): void => { turn++; if (ticking) setImmediate(tick); };
    tick();
    try {
      await until(() => seen.entries.includes(ids[n - 1]!), 10_000, 'every entry applied');
    } finally {
      ticking = false;
    }
    expect(seen.entries.slice(-n)).toEqual(ids);
    const mine = turns.slice(-n);
    expect(new Set(mine).size).toBeGreaterThan(3); // slices of about 1 ms: other callbacks ran between them
    // No proof was claimed while the reply was being applied (between its slices): each proof
    // claimed since saw none of its entries applied, or all of them.
    await until(() => seen.proofs.length > proofsBefore, 5000, 'a proof after the reply');
    const partial = seen.proofs.slice(proofsBefore).filter((p) => p.entries > appliedBefore && p.entries < appliedBefore + n);
    expect(partial).toEqual([]);
    expect(applied).toBe(appliedBefore + n);
    expect(seen.gaps).toEqual([]);
  });

  it(`while hints flow, ${kAnnouncedReadAt} announced entries end the wait for the next proof: a plain read takes them, and claims no proof`, async () => {
    const { r, seen } = await reader({ blockMs: 20_000, proofEveryMs: 5_000, hintsFlowing: () => true });
    const proofs = seen.proofs.length;
    const ids: string[] = [];
    for (let i = 0; i < kAnnouncedReadAt; i++) ids.push(await publish(`k${i}`));
    for (let i = 0; i < kAnnouncedReadAt; i++) r.announce(); // their hints (or this cache's own publishes)
    // The proof is 5 s away: only the announcements can make the reader read now.
    await until(() => seen.entries.length === kAnnouncedReadAt, 3000, 'the announced entries were read before the next proof was due');
    expect(seen.entries).toEqual(ids);
    expect(seen.proofs.length).toBe(proofs);
    expect(r.reads.total - r.reads.proving).toBe(1);
    expect(seen.gaps).toEqual([]);
  });
});
