import { Agent, request } from 'node:http';
import type { ReadReply, WriteReply } from './protocol.js';
import type { Truth } from './truth.js';

/** Where the driver sends requests: the HTTP port of each worker slot (undefined while one restarts). */
export type Ports = () => readonly (number | undefined)[];

/** Writes straight into PostgreSQL (the `external writes` scenario), bypassing the workers. */
export type ExternalWriter = (id: number) => Promise<{ v: number; at: number }>;

export interface DriverOptions {
  readonly ports: Ports;
  readonly truth: Truth;
  readonly durationMs: number;
  readonly concurrency: number;
  readonly products: number;
  readonly writeRatio: number;
  /** When set, writes go here instead of through a worker. */
  readonly external?: ExternalWriter | undefined;
  readonly signal: AbortSignal;
}

export interface DriverCounts {
  reads: number;
  hits: number;
  writes: number;
  /** Writes whose invalidation could not be published (the row changed anyway). */
  unpublished: number;
  /** Requests that failed (worker restarting, …); not counted as reads or writes. */
  errors: number;
  /** Reads through the main thread's cache / through a piscina thread's cache. */
  mainReads: number;
  threadReads: number;
}

/** Zipf(1) over 1…n: reads favour a hot set, as real traffic does; writes are uniform. */
function zipf(n: number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / (i + 1);
  for (let i = 0; i < n; i++) cdf[i]! /= sum;
  return () => {
    const u = Math.random();
    let lo = 0, hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo + 1;
  };
}

function call<T>(agent: Agent, port: number, method: string, path: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}: ${body}`));
        else {
          try { resolve(JSON.parse(body) as T); } catch (err) { reject(err); }
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** GET a worker's JSON endpoint (used for /stats). */
export function getJson<T>(port: number, path: string): Promise<T> {
  const agent = new Agent({ keepAlive: false });
  return call<T>(agent, port, 'GET', path).finally(() => agent.destroy());
}

/**
 * The load driver: `concurrency` loops, each making one request at a time until the duration
 * is over. A write goes through a random worker (or straight to PostgreSQL); a read goes through
 * a random worker, half the time to its main thread's cache, half to one of its threads'.
 * Every answer is handed to the truth checker.
 */
export async function drive(o: DriverOptions, counts: DriverCounts): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: o.concurrency });
  const hot = zipf(o.products);
  const end = Date.now() + o.durationMs;
  const pick = (): number | undefined => {
    const ports = o.ports();
    for (let tries = 0; tries < 4; tries++) {
      const p = ports[Math.floor(Math.random() * ports.length)];
      if (p !== undefined) return p;
    }
    return ports.find((p) => p !== undefined);
  };
  const loop = async (): Promise<void> => {
    while (Date.now() < end && !o.signal.aborted) {
      try {
        if (Math.random() < o.writeRatio) {
          const id = 1 + Math.floor(Math.random() * o.products);
          if (o.external) {
            const w = await o.external(id);
            o.truth.commit(id, w.v, w.at);
          } else {
            const port = pick();
            if (port === undefined) { counts.errors++; await new Promise((r) => setTimeout(r, 10)); continue; }
            const w = await call<WriteReply>(agent, port, 'POST', `/w/${id}`);
            o.truth.commit(id, w.v, w.at);
            if (w.pub === 0) counts.unpublished++;
          }
          counts.writes++;
        } else {
          const id = hot();
          const port = pick();
          if (port === undefined) { counts.errors++; await new Promise((r) => setTimeout(r, 10)); continue; }
          const thread = Math.random() < 0.5;
          const start = Date.now();
          const r = await call<ReadReply>(agent, port, 'GET', thread ? `/r/${id}?t=1` : `/r/${id}`);
          o.truth.read(id, r.v, start);
          counts.reads++;
          counts.hits += r.h;
          if (thread) counts.threadReads++;
          else counts.mainReads++;
        }
      } catch {
        counts.errors++;
        await new Promise((r) => setTimeout(r, 5)); // a worker restarting: do not spin
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, loop));
  } finally {
    agent.destroy();
  }
}
