import { createRequire } from 'node:module';
import { DemoUsageError, parseDemoArgs, usage as demoUsage } from '../demo-workers/args.js';
import { runDemo } from '../demo-workers/run.js';
import { selectScenarios } from '../demo-workers/scenarios/index.js';
import { UsageError } from './args.js';

/** PGlite is a dev dependency: present in a clone, absent from an installed package. */
function hasPglite(): boolean {
  try {
    createRequire(import.meta.url).resolve('@electric-sql/pglite-socket');
    return true;
  } catch {
    return false;
  }
}

const PGLITE_LINE = 'else a throwaway redis-server from PATH and an in-process PGlite.';

export const usage = demoUsage
  .replace('usage: npm run demo -- [options]      (or: cachebus demo [options])', 'usage: cachebus demo [options]      (same as: npm run demo -- [options])')
  .replace(PGLITE_LINE, hasPglite()
    ? PGLITE_LINE
    : 'else a throwaway redis-server from PATH. PostgreSQL is needed (the in-process PGlite\nfallback exists only in a clone with dev dependencies).');

/** `cachebus demo`: the multi-worker stale-cache demo (docs/demo.md). */
export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(usage);
    return 0;
  }
  // Bad input is one sentence and exit 2, like every verb (runDemo, for `npm run demo`, prints the whole usage).
  try {
    selectScenarios(parseDemoArgs(argv).scenarios);
  } catch (err) {
    if (err instanceof DemoUsageError || /unknown scenario/.test(String(err))) throw new UsageError((err as Error).message);
    throw err;
  }
  return runDemo(argv);
}
