import { Redis } from 'ioredis';
import { ConnectionError } from '../bus/errors.js';
import { newOrigin } from '../bus/bus.js';
import { busKeys } from '../bus/keys.js';
import { closePg, openPg } from '../bus/pg.js';
import { Publisher } from '../bus/publisher.js';
import {
  countDeadLetters, droppedDeadLetters, listDeadLetters, purgeDeadLetters, retryDeadLetters,
} from '../bus/write-behind/dead-letters.js';
import { UsageError, namespaceFlag, noPositionals, parse, prefixFlag, redisOptions, redisUrl } from './args.js';

export const usage = `cachebus dead-letters --namespace NS [--entity E] [--retry | --purge] [--json] [--limit N] [--redis URL] [--prefix P]
                      [--pg URL] [--secret S]
  Lists the write-behind rows Postgres refused (constraint violation, bad type), oldest first,
  with the reason. --retry puts them back in the queue with their original version (fix the
  cause first; a row refused again comes back here): a row Postgres (--pg, default DATABASE_URL)
  already holds in the same or a newer version, or pending in a newer one, is dropped as
  superseded, and every cache is told to drop its copy of the rows requeued.
  --purge deletes them for good.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
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
  noPositionals(positionals);
  const namespace = namespaceFlag(values.namespace);
  if (values.retry && values.purge) throw new UsageError('give --retry or --purge, not both');
  const limit = Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit must be a positive integer');
  if (values.entity === '') throw new UsageError('--entity must not be empty');
  const keys = busKeys(prefixFlag(values.prefix), namespace);
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
    let shown = 0;
    for (const { raw, letter: d } of all) {
      if (entity !== undefined && d?.entity !== entity) continue;
      shown++;
      if (values.json) console.log(d === undefined ? JSON.stringify({ invalid: raw }) : JSON.stringify(d));
      else if (d === undefined) console.log(`!! not a dead-letter record: ${raw.slice(0, 200)}`);
      else console.log(`${new Date(d.at).toISOString()}  ${d.entity}:${d.id}  v${d.version}  ${d.code || '-'}  ${d.reason}\n    ${d.row}`);
    }
    if (!values.json) {
      const total = await countDeadLetters(client, keys);
      const dropped = await droppedDeadLetters(client, keys);
      const bound = dropped > 0 ? `; ${dropped} older one(s) dropped by the bound (maxDeadLetters)` : '';
      console.error(entity === undefined
        ? `-- ${total} dead letter(s) in ${keys.base}${bound}`
        : `-- ${shown} dead letter(s) of entity ${entity} (${total} in all in ${keys.base}${all.length < total ? `; only the oldest ${all.length} were looked at, raise --limit` : ''}${bound})`);
    }
    return 0;
  } finally {
    client.disconnect();
  }
}
