#!/usr/bin/env node
import { CachebusError } from '../bus/errors.js';
import { UsageError } from './args.js';

interface Command {
  readonly summary: string;
  load(): Promise<{ run(argv: string[]): Promise<number>; usage: string }>;
}

/** Subcommands, loaded on demand. Add one line per command. */
const commands: Record<string, Command> = {
  tail: { summary: 'print invalidations as they flow', load: () => import('./tail.js') },
  publish: { summary: 'publish one invalidation', load: () => import('./publish.js') },
  'dead-letters': { summary: 'list or retry write-behind rows Postgres refused', load: () => import('./dead-letters.js') },
  bench: { summary: 'run the benchmarks (cachebus vs its baselines, one table)', load: () => import('./bench.js') },
  sidecar: { summary: 'run the outbox relay (and other services) until SIGTERM', load: () => import('./sidecar.js') },
  'install-triggers': { summary: 'record changes of a table in the outbox', load: () => import('./install-triggers.js') },
  demo: { summary: 'multi-worker demo: stale caches reproduced, then gone', load: () => import('./demo.js') },
  torture: { summary: 'nemesis run: random faults, an exact checker, a replayable seed', load: () => import('./torture.js') },
};

function help(): string {
  const rows = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(18)} ${c.summary}`);
  return `usage: cachebus <command> [options]   (cachebus <command> --help for its options)\n\ncommands:\n${rows.join('\n')}`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(help());
    return name === undefined ? 2 : 0;
  }
  const cmd = commands[name];
  if (cmd === undefined) {
    console.error(`cachebus: unknown command "${name}"\n\n${help()}`);
    return 2;
  }
  const mod = await cmd.load();
  try {
    return await mod.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`cachebus ${name}: ${err.message}\n\n${mod.usage}`);
      return 2;
    }
    if (err instanceof CachebusError) {
      console.error(`cachebus ${name}: ${err.message} [${err.code}]`);
      return 1;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    console.error(`cachebus: ${(err as Error)?.stack ?? err}`);
    process.exitCode = 1;
  },
);
