import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { RedisClient } from '../connection.js';

/** Data of a flush tick job. */
export interface TickData {
  readonly entity: string;
}

/**
 * The BullMQ side of write-behind: a job carries a flush TICK for an entity (at most one per
 * entity per flush slot, deduplicated by job id), never a row. The rows themselves wait in the
 * overlay and the dirty set, which are the durable queue; a lost tick only delays a flush until
 * the flusher's next sweep.
 */
export class TickQueue {
  readonly #client: RedisClient;
  readonly #name: string;
  readonly #prefix: string;
  #queue: Queue<TickData> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(client: RedisClient, name: string, prefix: string) {
    this.#client = client;
    this.#name = name;
    this.#prefix = prefix;
  }

  /** Adds the tick of `slot` with a delay; errors go to `onError` (the rows are already durable). */
  schedule(entity: string, slot: number, delayMs: number, onError: (err: unknown) => void): void {
    this.#queue ??= new Queue<TickData>(this.#name, { connection: this.#client as Redis, prefix: this.#prefix });
    const p = this.#queue
      .add('tick', { entity }, {
        jobId: `${entity}-${slot}`,
        delay: Math.max(0, delayMs),
        removeOnComplete: true,
        removeOnFail: 1000,
      })
      .catch(onError);
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  }

  /** Waits for the adds in flight, then closes the queue (the shared connection stays open). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#inFlight]);
    await this.#queue?.close().catch(() => undefined); // the cache may have closed the connection first
  }
}
