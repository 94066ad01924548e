/** `cachebus bench [NAME...] [--json] [--smoke]`: the benchmark suite (bench/run.ts). */
import { main } from '../bench/run.js';
import { parse, redisUrl } from './args.js';
import { checkRedis } from './checks.js';

export { usage } from '../bench/run.js';

/** Checks --redis (every benchmark suite run needs it) before handing over to bench/run.ts. */
export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    json: { type: 'boolean' }, smoke: { type: 'boolean' }, list: { type: 'boolean' },
    redis: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  });
  if (!values.help && !values.list) await checkRedis(redisUrl(values.redis));
  return main(argv);
}
