import { Redis } from 'ioredis';
import { ConnectionError } from '../bus/errors.js';
import { newOrigin } from '../bus/bus.js';
import { busKeys } from '../bus/keys.js';
import { closePg, openPg } from '../bus/pg.js';
import { Publisher } from '../bus/publisher.js';
import {
  countDeadLetters, droppedDeadLetters, listDeadLetters, purgeDeadLetters, retryDeadLetters,
} from '../bus/write-behind/dead-letters.js';
import { parse, redisOptions, redisUrl, required, UsageError } from './args.js';

export const usage = `cachebus dead-letters --namespace NS [--entity E] [--retry | --purge] [--json] [--limit N] [--redis URL] [--prefix P]
                      [--pg URL] [--secret S]
  Lists the write-behind rows Postgres refused (constraint violation, bad type), oldest first,
  with the reason. --retry puts them back in the queue with their original version (fix the
  cause first; a row refused again comes back here): a row Postgres (--pg, default DATABASE_URL)
  already holds in the same or a newer version, or pending in a newer one, is dropped as
  superseded, and every cache is told to drop its copy of the rows requeued.
  --purge deletes them for good.`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...redisOptions,
    entity: { type: 'string', short: 'e' },
    retry: { type: 'boolean' },
    purge: { type: 'boolean' },
    json: { type: 'boolean' },
    limit: { type: 'string', default: '1000' },
    pg: { type: 'string' },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const namespace = required(values.namespace, 'namespace');
  if (values.retry && values.purge) throw new UsageError('give --retry or --purge, not both');
  const limit = Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit must be a positive integer');
  const keys = busKeys(values.prefix, namespace);
  const url = redisUrl(values.redis);
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null, connectTimeout: 3000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    throw new ConnectionError(`cannot reach Redis: ${(err as Error).message} (set --redis or REDIS_URL)`, { cause: err });
  }
  try {
    const entity = values.entity;
    if (values.retry) {
      const db = openPg(values.pg, 1);
      const publisher = new Publisher(client, {
        stream: keys.stream, origin: newOrigin(), secret: values.secret, maxEntryBytes: 65_536, streamMaxLen: 100_000,
      });
      try {
        const r = await retryDeadLetters(client, keys, (d) => entity === undefined || d.entity === entity, limit, {
          pg: db.pool, invalidate: (k) => publisher.publish({ keys: k }),
        });
        console.log(values.json ? JSON.stringify(r) : `requeued ${r.requeued}, superseded by a newer version ${r.superseded}, skipped ${r.skipped}`);
        return 0;
      } finally {
        await closePg(db);
      }
    }
    if (values.purge) {
      const n = await purgeDeadLetters(client, keys, (d) => entity === undefined || d?.entity === entity);
      console.log(values.json ? JSON.stringify({ purged: n }) : `purged ${n}`);
      return 0;
    }
    const all = await listDeadLetters(client, keys, limit);
    for (const { raw, letter: d } of all) {
      if (entity !== undefined && d?.entity !== entity) continue;
      if (values.json) console.log(d === undefined ? JSON.stringify({ invalid: raw }) : JSON.stringify(d));
      else if (d === undefined) console.log(`!! not a dead-letter record: ${raw.slice(0, 200)}`);
      else console.log(`${new Date(d.at).toISOString()}  ${d.entity}:${d.id}  v${d.version}  ${d.code || '-'}  ${d.reason}\n    ${d.row}`);
    }
    if (!values.json) {
      const dropped = await droppedDeadLetters(client, keys);
      console.error(`-- ${await countDeadLetters(client, keys)} dead letter(s) in ${keys.base}${dropped > 0 ? `; ${dropped} older one(s) dropped by the bound (maxDeadLetters)` : ''}`);
    }
    return 0;
  } finally {
    client.disconnect();
  }
}
