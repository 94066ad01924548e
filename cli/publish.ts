import { Bus } from '../bus/bus.js';
import { assertKey } from '../bus/wire.js';
import { parse, redisOptions, redisUrl, required, UsageError } from './args.js';

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
  const namespace = required(values.namespace, 'namespace');
  const tags = values.tag ?? [];
  if (positionals.length === 0 && tags.length === 0 && !values.clear) {
    throw new UsageError('give at least one key, --tag or --clear');
  }
  for (const k of [...positionals, ...tags]) assertKey(k, 1024);
  const bus = await Bus.open(
    {
      redis: redisUrl(values.redis), namespace, prefix: values.prefix, secret: values.secret,
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
