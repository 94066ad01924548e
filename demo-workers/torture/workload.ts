import { Agent, request } from 'node:http';
import type pg from 'pg';
import { now, type History } from './history.js';
import { GROUPS, IDS_PER_GROUP, outsideIds, ROWS, type ReadAnswer, type WriteAnswer } from './layout.js';

/** The HTTP port and pid of each worker slot (undefined while one restarts). */
export type Slots = () => readonly ({ port: number; pid: number } | undefined)[];

const agent = new Agent({ keepAlive: true, maxSockets: 64 });

/** The first row of each group is hot: races on one row (written again while its older version is in flight) are where coherence bugs live. */
const HOT = GROUPS.map((_, g) => 1 + g * IDS_PER_GROUP);
/** Half the requests go to a hot row, the others to any row. */
const pickRow = (): number => (Math.random() < 0.5 ? HOT[Math.floor(Math.random() * HOT.length)]! : 1 + Math.floor(Math.random() * ROWS));

/** One request to a worker; rejects on a non-200 answer or after `timeoutMs`. */
export function call<T>(port: number, method: string, path: string, timeoutMs = 15_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`${method} ${path}: ${res.statusCode} ${body}`));
        else {
          try { resolve(JSON.parse(body) as T); } catch (err) { reject(err as Error); }
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export interface WorkloadOptions {
  readonly slots: Slots;
  readonly history: History;
  /** Pool of the outside writer (plain SQL, as psql would; the triggers fill the outbox). */
  readonly outside: pg.Pool;
  readonly table: string;
  readonly loops: number;
  /** Pause between two operations of one loop, ms (keeps the CPU use moderate). */
  readonly pauseMs: number;
  readonly signal: AbortSignal;
}

/**
 * `loops` concurrent clients, each: pick a worker and a row at random (half the time one of the
 * hot rows), then read (70 %), write (half the writes in bursts on one row)
 * through the row's path in the worker (25 %), or write from outside the app (5 %). Every
 * answer is recorded in the history with the time the request was sent and answered.
 */
export async function runWorkload(o: WorkloadOptions): Promise<void> {
  const outside = outsideIds();
  const step = `UPDATE ${o.table} SET version = version + 1, price = price + 1 WHERE id = $1 RETURNING version`;
  const loop = async (): Promise<void> => {
    while (!o.signal.aborted) {
      const u = Math.random();
      if (u < 0.05) {
        const id = outside[Math.floor(Math.random() * outside.length)]!;
        const start = now();
        try {
          const r = await o.outside.query<{ version: string }>(step, [id]);
          o.history.write({ worker: -1, id, v: Number(r.rows[0]!.version), how: 'outside', start, end: now(), acked: true });
        } catch {
          o.history.failed++;
        }
      } else {
        const slots = o.slots();
        const slot = Math.floor(Math.random() * slots.length);
        const s = slots[slot];
        const id = pickRow();
        if (s !== undefined) {
          const start = now();
          try {
            if (u < 0.30) {
              // Half the writes are bursts: the same row written again 1–3 times, 100–400 ms apart,
              // through any worker (an older version is then still in flight: being flushed, or
              // its invalidation on the way).
              const again = Math.random() < 0.5 ? 1 + Math.floor(Math.random() * 3) : 0;
              for (let k = 0; k <= again && !o.signal.aborted; k++) {
                const ws = k === 0 ? slot : Math.floor(Math.random() * slots.length);
                const target = o.slots()[ws];
                if (target === undefined) continue;
                if (k > 0) await new Promise((r) => setTimeout(r, 100 + Math.random() * 300));
                const t = now();
                try {
                  const w = await call<WriteAnswer>(target.port, 'POST', `/w/${id}`);
                  o.history.write({ worker: ws, id, v: w.v, how: w.how, start: t, end: now(), acked: w.pub === 1 });
                } catch {
                  o.history.failed++;
                }
              }
            } else {
              const cache = u < 0.50 ? 1 : 0; // a fifth of the reads through the worker's piscina thread
              const r = await call<ReadAnswer>(s.port, 'GET', `/${cache ? 't' : 'r'}/${id}`);
              o.history.read({ worker: slot, pid: s.pid, cache, id, v: r.v, hit: r.h === 1, start, end: now() });
            }
          } catch {
            o.history.failed++;
          }
        }
      }
      await new Promise((r) => setTimeout(r, o.pauseMs));
    }
  };
  await Promise.all(Array.from({ length: o.loops }, loop));
}
