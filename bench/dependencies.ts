/**
 * Invalidating one key with 10,100 transitive dependents (root -> 100 mid -> 100 leaves each),
 * three reader caches holding all of them: stream entries, bytes and time until every reader
 * dropped everything, with the dependents expanded
 *   - at each reader (the stream carries `root` only; each reader walks its own graph), vs
 *   - at the publisher (it walks its graph and publishes all 10,101 keys).
 * Baseline in the same run: invalidating one key with no dependents. Also the local expansion
 * cost (applyInvalidation of root in a local-only cache).
 *
 *   node dist/bench/dependencies.js [--smoke]
 */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { busKeys } from '../bus/keys.js';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { DependencyGraph } from '../worker-runtime/dependencies.js';
import {
  cleanupPrefix, median, randomPrefix, row, type BenchContext, type Benchmark, type Row,
  runIfMain,
} from './harness.js';

const READERS = 3;

function tree(mids: number, leaves: number): { key: string; deps: string[] }[] {
  const out: { key: string; deps: string[] }[] = [{ key: 'root', deps: [] }];
  for (let i = 0; i < mids; i++) {
    out.push({ key: `order:${i}:total`, deps: ['root'] });
    for (let j = 0; j < leaves; j++) out.push({ key: `invoice_line:${i}:${j}:amount`, deps: [`order:${i}:total`] });
  }
  return out;
}

async function fill(c: Cache<{}>, entries: { key: string; deps: string[] }[], withDeps: boolean): Promise<void> {
  for (const e of entries) await c.get(e.key, () => 1, withDeps && e.deps.length > 0 ? { dependsOn: e.deps } : undefined);
}

/** Time from the publisher's call until every reader has received the entries that drop `expect` keys. */
async function round(pub: Cache<{}>, readers: Cache<{}>[], keys: string[], expect: number): Promise<number> {
  const done = readers.map((r) => new Promise<void>((resolve) => {
    let dropped = 0;
    const on = (p: { dropped: number }): void => {
      dropped += p.dropped;
      if (dropped >= expect) { r.off('received', on); resolve(); }
    };
    r.on('received', on);
  }));
  const t0 = performance.now();
  await pub.invalidate(...keys);
  await Promise.all(done);
  return performance.now() - t0;
}

export const dependenciesBenchmark: Benchmark = {
  name: 'dependencies',
  summary: 'invalidate a key with 10,100 transitive dependents: entries and time, reader- vs publisher-side expansion',
  async run(ctx: BenchContext): Promise<Row[]> {
    const mids = ctx.smoke ? 10 : 100;
    const entries = tree(mids, 100);
    const n = entries.length;
    const rounds = ctx.smoke ? 1 : 5;
    const prefix = randomPrefix();
    const raw = new Redis(ctx.redisUrl);
    const opts = { redis: ctx.redisUrl, namespace: 'bench', prefix, maxEntries: 50_000, maxEntryBytes: 65_536 };
    const pub = await createCache<{}>(opts);
    const readers = await Promise.all(Array.from({ length: READERS }, () => createCache<{}>(opts)));
    const stream = busKeys(prefix, 'bench').stream;
    /** Entries added since `len`, and their field bytes. */
    const added = async (len: number): Promise<[number, number]> => {
      const count = (await raw.xlen(stream)) - len;
      const last = count > 0 ? await raw.xrevrange(stream, '+', '-', 'COUNT', count) : [];
      return [count, last.reduce((b, [, f]) => b + f.reduce((x, v) => x + Buffer.byteLength(v), 0), 0)];
    };
    try {
      const res = { reader: [] as number[], publisher: [] as number[], single: [] as number[], expandMs: [] as number[], dropMs: [] as number[] };
      let readerEntries = 0, publisherEntries = 0, readerBytes = 0, publisherBytes = 0;
      for (let i = 0; i < rounds; i++) {
        // Baseline: one key, no dependents.
        for (const r of readers) await r.get('solo', () => 1);
        res.single.push(await round(pub, readers, ['solo'], 1));

        // Reader-side: readers know the graph; the stream carries `root`.
        for (const r of readers) await fill(r, entries, true);
        let len = await raw.xlen(stream);
        res.reader.push(await round(pub, readers, ['root'], n));
        [readerEntries, readerBytes] = await added(len);

        // Publisher-side: the publisher expands with its graph; readers hold plain entries.
        const g = new DependencyGraph();
        for (const e of entries) g.link(e.key, e.deps);
        for (const r of readers) await fill(r, entries, false);
        len = await raw.xlen(stream);
        const t0 = performance.now();
        const keys = g.expand(['root']);
        const expand = performance.now() - t0;
        res.publisher.push(expand + await round(pub, readers, keys, n));
        [publisherEntries, publisherBytes] = await added(len);
      }
      // Local cost of the reader-side expansion: applyInvalidation of root in a local-only cache.
      for (let i = 0; i < rounds; i++) {
        const local = await createCache<{}>({ redis: false, namespace: 'bench', maxEntries: 50_000 });
        await fill(local, entries, true);
        const t0 = performance.now();
        const dropped = local.applyInvalidation(['root'], [], 'invalidate');
        res.expandMs.push(performance.now() - t0);
        if (dropped !== n) throw new Error(`expected ${n} drops, got ${dropped}`);
        await local.close();
        // The same drops given as a list, no graph: what the expansion adds is the difference.
        const plain = await createCache<{}>({ redis: false, namespace: 'bench', maxEntries: 50_000 });
        await fill(plain, entries, false);
        const list = entries.map((e) => e.key);
        const t1 = performance.now();
        plain.applyInvalidation(list, [], 'invalidate');
        res.dropMs.push(performance.now() - t1);
        await plain.close();
      }
      const name = 'dependencies';
      const base = median(res.single);
      return [
        row(name, `reader-side: time to drop ${n} keys in ${READERS} readers (median of ${rounds})`, 'ms', median(res.reader), '1 key, no dependents', base),
        row(name, `publisher-side: time to drop ${n} keys in ${READERS} readers (median of ${rounds})`, 'ms', median(res.publisher), '1 key, no dependents', base),
        row(name, 'reader-side: stream entries per invalidation', 'entries', readerEntries, 'publisher-side', publisherEntries, { valueMax: 1 }),
        row(name, 'reader-side: stream entry bytes per invalidation', 'bytes', readerBytes, 'publisher-side', publisherBytes),
        row(name, `reader-side: local expansion + drop of ${n} keys (applyInvalidation)`, 'ms', median(res.expandMs), 'drop of the same keys listed, no graph', median(res.dropMs)),
      ];
    } finally {
      await Promise.all([pub, ...readers].map((c) => c.close()));
      raw.disconnect();
      await cleanupPrefix(ctx.redisUrl, prefix);
    }
  },
};

await runIfMain(import.meta.url, dependenciesBenchmark);
