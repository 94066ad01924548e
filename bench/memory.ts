/**
 * Benchmark 5, `memory`: heap bytes per cached entry, 100k entries with ~100-byte string
 * values, cachebus (each policy) vs bare lru-cache (target: at most 1.3x) and Map. Each
 * container is filled in a fresh child process run with --expose-gc and measured by heap
 * deltas after full GCs, keys and values included. The `strings` child holds the same keys
 * and values with no container, so "overhead" rows show the structure's cost alone.
 */
import { fork } from 'node:child_process';
import { fixturePath, row, type BenchContext, type Benchmark, type Row } from './harness.js';

interface Result { kind: string; bytesPerEntry?: number; entries?: number; error?: string }

function measureIn(kind: string, n: number, valueBytes: number): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = fork(fixturePath('memory-child'), [kind, String(n), String(valueBytes)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: [...process.execArgv, '--expose-gc'],
    });
    let result: Result | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('message', (m: Result) => { result = m; });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (result?.error) reject(new Error(`memory child ${kind}: ${result.error}`));
      else if (result === undefined) reject(new Error(`memory child ${kind} exited (${code}) without a result`));
      else resolve(result);
    });
  });
}

export const memory: Benchmark = {
  name: 'memory',
  summary: 'heap bytes per entry, 100k entries with ~100-byte values, vs lru-cache',
  async run(ctx: BenchContext): Promise<Row[]> {
    const n = ctx.smoke ? 20_000 : 100_000;
    const valueBytes = 100;
    const kinds = ['strings', 'map', 'lru-cache', 'cachebus-lru', 'cachebus-lfu', 'cachebus-fifo', 'cachebus-ttl'];
    const b: Record<string, number> = {};
    for (const kind of kinds) {
      ctx.log(`memory: ${kind}, ${n} entries`);
      const r = await measureIn(kind, n, valueBytes);
      if (r.entries !== n) throw new Error(`memory child ${kind} held ${r.entries} entries, expected ${n}`);
      b[kind] = r.bytesPerEntry!;
    }
    const what = `bytes/entry, ${n / 1000}k x ${valueBytes} B values`;
    const strings = b.strings!;
    return [
      row('memory', `${what}, policy lru`, 'B', b['cachebus-lru']!, 'lru-cache', b['lru-cache']!, { ratioMax: 1.3 }),
      row('memory', `${what}, policy lru`, 'B', b['cachebus-lru']!, 'Map', b.map!),
      row('memory', `overhead beyond key+value (${strings.toFixed(0)} B), policy lru`, 'B', b['cachebus-lru']! - strings, 'lru-cache', b['lru-cache']! - strings),
      ...(['lfu', 'fifo', 'ttl'] as const).map((p) =>
        row('memory', `${what}, policy ${p}`, 'B', b[`cachebus-${p}`]!, 'lru-cache', b['lru-cache']!)),
    ];
  },
};
