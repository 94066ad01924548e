import { usage as demoUsage } from '../demo-workers/args.js';
import { runDemo } from '../demo-workers/run.js';

export const usage = demoUsage.replace('usage: npm run demo -- [options]      (or: cachebus demo [options])', 'usage: cachebus demo [options]      (same as: npm run demo -- [options])');

/** `cachebus demo`: the multi-worker stale-cache demo (docs/demo.md). */
export function run(argv: string[]): Promise<number> {
  return runDemo(argv);
}
