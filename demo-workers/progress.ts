import type { DriverCounts } from './driver.js';
import type { Truth } from './truth.js';

/**
 * The progress line on stderr while a scenario runs: redrawn in place on a terminal, one line
 * per scenario otherwise (CI logs).
 */
export class Progress {
  readonly #tty = process.stderr.isTTY === true;
  #timer: NodeJS.Timeout | undefined;
  #last = '';

  start(name: string, durationMs: number, counts: DriverCounts, truth: Truth): void {
    const started = Date.now();
    const draw = (): void => {
      const t = Math.min(durationMs, Date.now() - started) / 1000;
      const text = `  ${name.padEnd(16)} ${t.toFixed(1)}/${(durationMs / 1000).toFixed(1)} s  reads ${counts.reads.toLocaleString('en-US')}  writes ${counts.writes.toLocaleString('en-US')}  stale so far ${truth.liveStale.toLocaleString('en-US')}`;
      this.#last = text;
      if (this.#tty) process.stderr.write(`\r\x1b[2K${text}`);
    };
    if (this.#tty) {
      draw();
      this.#timer = setInterval(draw, 250);
      this.#timer.unref();
    } else {
      process.stderr.write(`  ${name}: running for ${(durationMs / 1000).toFixed(1)} s\n`);
      this.#timer = setInterval(draw, 1000);
      this.#timer.unref();
    }
  }

  /** Stops redrawing; `message` replaces the line. */
  stop(message?: string): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#tty) process.stderr.write(`\r\x1b[2K${message ? `${message}\n` : ''}`);
    else if (message) process.stderr.write(`${message}\n`);
  }

  /** A line of its own (setup steps…). */
  note(message: string): void {
    if (this.#tty && this.#timer) process.stderr.write(`\r\x1b[2K${message}\n${this.#last}`);
    else process.stderr.write(`${message}\n`);
  }
}
