import { Bus } from '../bus/bus.js';
import { assertKey } from '../bus/wire.js';
import { namespaceFlag, parse, prefixFlag, redisOptions, redisUrl, UsageError } from './args.js';
import { checkRedis } from './checks.js';

export const usage = `cachebus publish --namespace NS [KEY...] [--tag TAG]... [--clear] [--redis URL] [--prefix P] [--secret S]
  Publishes one invalidation entry and prints its stream ID.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...redisOptions,
    tag: { type: 'string', short: 't', multiple: true },
    clear: { type: 'boolean' },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const namespace = namespaceFlag(values.namespace);
  const prefix = prefixFlag(values.prefix);
  const redis = redisUrl(values.redis);
  const tags = values.tag ?? [];
  if (positionals.length === 0 && tags.length === 0 && !values.clear) {
    throw new UsageError('give at least one key, --tag or --clear');
  }
  for (const k of positionals) assertKey(k, 1024);
  for (const t of tags) assertKey(t, 1024, 'tag');
  await checkRedis(redis);
  const bus = await Bus.open(
    {
      redis, namespace, prefix, secret: values.secret,
      maxEntryBytes: 65_536, streamMaxLen: 100_000, readCount: 1, blockMs: 1000, connectTimeoutMs: 3000,
      publishOnly: true,
    },
    { onEntry() {}, onGap() {}, onBadEntry() {}, onStatus() {}, onCaughtUp() {}, onError() {} },
  );
  try {
    const ids = await bus.publish({ keys: positionals, tags, clear: values.clear ?? false });
    console.log(ids.join('\n'));
  } finally {
    await bus.close();
  }
  return 0;
}
