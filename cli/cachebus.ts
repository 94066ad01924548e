#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { CachebusError, InvalidKeyError, InvalidOptionError } from '../bus/errors.js';
import { CliError, UsageError } from './args.js';

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
  return `usage: cachebus <command> [options]   (cachebus <command> --help for its options)\n\ncommands:\n${rows.join('\n')}\n\n  --version          print the version`;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** One line: whitespace (newlines included) collapsed. */
const line = (s: string): string => s.replace(/\s+/g, ' ').trim();

/** Postgres server errors carry a five-character SQLSTATE. */
function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * Every failure as one sentence and an exit code: 2 for bad usage (the command did nothing),
 * 1 for a runtime failure. A stack is printed only for a bug, and only with CACHEBUS_DEBUG=1.
 */
function describeFailure(cmd: string, err: unknown): { code: number; message: string } {
  const who = `cachebus ${cmd}`;
  const msg = line(String((err as Error)?.message ?? err));
  if (err instanceof UsageError) return { code: 2, message: `${who}: ${msg} (see cachebus ${cmd} --help)` };
  if (err instanceof CliError) return { code: 1, message: `${who}: ${msg}` };
  if (err instanceof InvalidOptionError || err instanceof InvalidKeyError) {
    return { code: 2, message: `${who}: ${msg} [${err.code}] (see cachebus ${cmd} --help)` };
  }
  if (err instanceof CachebusError) return { code: 1, message: `${who}: ${msg} [${err.code}]` };
  const state = sqlState(err);
  if (state !== undefined) return { code: 1, message: `${who}: Postgres refused: ${msg} [postgres ${state}]` };
  const sys = (err as { code?: unknown; syscall?: unknown } | undefined);
  if (typeof sys?.code === 'string' && typeof sys.syscall === 'string') return { code: 1, message: `${who}: ${msg}` };
  return { code: 1, message: `${who}: unexpected error: ${msg} (set CACHEBUS_DEBUG=1 for the stack trace)` };
}

/** The optional peer dependency (package.json peerDependenciesMeta) a failed import is missing, if any. */
function missingPeer(err: unknown): string | undefined {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || typeof e.message !== 'string') return undefined;
  const msg = e.message;
  return ['pg', 'bullmq', 'piscina', 'prom-client'].find((p) => msg.includes(`'${p}'`));
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-v' || name === 'version') {
    console.log(version());
    return 0;
  }
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(help());
    return name === undefined ? 2 : 0;
  }
  const cmd = commands[name];
  if (cmd === undefined) {
    console.error(`cachebus: unknown command ${JSON.stringify(name)} (cachebus --help lists the commands)`);
    return 2;
  }
  const mod = await cmd.load().catch((err: unknown) => {
    const peer = missingPeer(err);
    if (peer === undefined) throw err;
    // An optional peer dependency of cachebus this command needs (a cache-only install has none).
    console.error(`cachebus ${name} needs the package ${peer}, which is not installed: npm install ${peer}`);
    return undefined;
  });
  if (mod === undefined) return 1;
  try {
    return await mod.run(rest);
  } catch (err) {
    if (process.env.CACHEBUS_DEBUG) console.error((err as Error)?.stack ?? err);
    const { code, message } = describeFailure(name, err);
    console.error(message);
    // Connections a failed command opened must not keep the process alive: stderr is written
    // synchronously, so exiting now loses nothing.
    process.exit(code);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // A finished command exits even if a library left a handle open (a reconnecting client).
    setTimeout(() => process.exit(code), 2_000).unref();
  },
  (err: unknown) => {
    console.error(`cachebus: ${line(String((err as Error)?.message ?? err))}`);
    process.exit(1);
  },
);
