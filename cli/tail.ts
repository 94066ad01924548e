import { Bus } from '../bus/bus.js';
import { namespaceFlag, noPositionals, parse, prefixFlag, redisOptions, redisUrl } from './args.js';
import { checkRedis } from './checks.js';

export const usage = `cachebus tail --namespace NS [--redis URL] [--prefix P] [--secret S] [--json]
  Prints every invalidation of the namespace as it flows: time, origin, keys/tags, lag.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...redisOptions, json: { type: 'boolean' } });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  noPositionals(positionals);
  const namespace = namespaceFlag(values.namespace);
  const prefix = prefixFlag(values.prefix);
  const redis = redisUrl(values.redis);
  await checkRedis(redis);
  // After start-up, one line per distinct error (a Redis outage retries every few hundred ms).
  let lastError = '';
  const out = (o: Record<string, unknown>, text: string): void => {
    console.log(values.json ? JSON.stringify(o) : text);
  };
  const bus = await Bus.open(
    {
      redis, namespace, prefix, secret: values.secret,
      maxEntryBytes: 1 << 20, streamMaxLen: 0, readCount: 1000, blockMs: 1000, connectTimeoutMs: 3000,
    },
    {
      onEntry(e) {
        const lagMs = Date.now() - e.time;
        const what = [
          e.keys.length ? `keys=${e.keys.join(',')}` : '',
          e.tags.length ? `tags=${e.tags.join(',')}` : '',
          e.clear ? 'CLEAR' : '',
        ].filter(Boolean).join(' ');
        out(
          { type: 'invalidation', id: e.id, time: new Date(e.time).toISOString(), origin: e.origin, keys: e.keys, tags: e.tags, clear: e.clear, lagMs },
          `${new Date(e.time).toISOString()}  ${e.id}  ${e.origin || '-'}  ${what}  lag=${lagMs}ms`,
        );
      },
      onGap(cause, detail) { out({ type: 'gap', cause, detail }, `!! gap (${cause}): ${detail}`); },
      onBadEntry(reason, id, message) { out({ type: 'bad', reason, id, message }, `!! bad entry ${id} (${reason}): ${message}`); },
      onStatus(status) {
        if (status === 'ready') lastError = '';
        if (!values.json) console.error(`-- ${status}`);
      },
      onCaughtUp() {},
      onError(err) {
        const msg = String((err as Error)?.message ?? err);
        if (msg !== lastError) console.error(`cachebus tail: ${msg}`);
        lastError = msg;
      },
    },
  );
  console.error(`-- tailing ${bus.keys.stream} (Ctrl-C to stop)`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await bus.close();
  return 0;
}
