/** Entry of `npm run demo` (node dist/demo-workers/main.js). */
import { runDemo } from './run.js';

runDemo(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    console.error(`demo: ${(err as Error)?.stack ?? err}`);
    process.exitCode = 1;
  },
);
