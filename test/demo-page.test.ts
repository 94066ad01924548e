/**
 * The demo's live page in a real browser: Debian's chromium driven by playwright-core. A short
 * demo (bus off, bus on, chaos) runs as a child process; the page must show bus off's stale
 * reads rise above zero, bus on's stale reads beyond the bound stay at zero, a chaos marker and
 * the final table. Then the --report file, opened from disk with every network request refused,
 * must render the same charts with data. The screenshot goes to a temp dir (set
 * UPDATE_DEMO_SCREENSHOT=1 to write docs/demo-page.png, the README's picture).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { LiveBoard } from '../demo-workers/live.js';
import { loadPageAssets, reportPage } from '../demo-workers/page-server.js';
import { Truth } from '../demo-workers/truth.js';
import { DATABASE_URL } from './helpers/pg.js';

const CHROMIUM = '/usr/bin/chromium';
const MAIN = fileURLToPath(new URL('../dist/demo-workers/main.js', import.meta.url));
const SCREENSHOT = process.env.UPDATE_DEMO_SCREENSHOT === '1'
  ? fileURLToPath(new URL('../docs/demo-page.png', import.meta.url))
  : undefined;
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`demo-page.test: ${CHROMIUM} is missing, browser test skipped (apt-get install chromium; .ci/run installs it)`);

/** What the page exposes as window.__demo (see demo-workers/page/page.js). */
interface PageApi {
  ready?: boolean;
  report: boolean;
  state: {
    scenarios: string[]; boundMs: number;
    samples: { s: number; t: number; stale: number; beyond: number; reads: number }[];
    markers: { s: number; kind: string; label: string }[];
    status: { phase: string; s: number };
    results: { name: string; ok: boolean }[];
  } | null;
  charts: { u: { data: (number | null)[][] } }[];
}
/** A canvas, as the report's check reads it. */
interface Canvas { width: number; height: number; getContext(k: '2d'): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } }
// Browser globals inside page.evaluate / waitForFunction (the project compiles without the DOM lib).
declare const window: { __demo?: PageApi };
declare const document: { querySelectorAll(sel: string): ArrayLike<unknown> & Iterable<unknown> };

const tmp = mkdtempSync(join(tmpdir(), 'cachebus-demo-page-'));
let child: ChildProcess | undefined;
let context: BrowserContext | undefined;

afterAll(async () => {
  await context?.close().catch(() => undefined);
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGINT'); // the demo cleans up on SIGINT
  rmSync(tmp, { recursive: true, force: true });
});

/** Starts the demo; resolves with the page's URL once it is printed, and the exit promise. */
function startDemo(report: string): Promise<{ url: string; exited: Promise<{ code: number | null; out: string }> }> {
  const args = [
    '--scenario', 'bus-off,bus-on,chaos', '--duration', '6s', '--workers', '2', '--threads', '1', '--concurrency', '6',
    // A small hot set and many writes: stale reads show up within the first seconds of bus off.
    '--products', '20', '--write-ratio', '0.2', '--metrics-port', '0', '--report', report,
  ];
  const c = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, DATABASE_URL }, stdio: ['ignore', 'pipe', 'pipe'] });
  child = c;
  let out = '';
  const exited = new Promise<{ code: number | null; out: string }>((resolve) => c.on('close', (code) => resolve({ code, out })));
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = /live page: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
      if (m) {
        c.stdout!.off('data', onData);
        c.stdout!.on('data', (more: Buffer) => { out += more.toString(); });
        resolve({ url: m[1]!, exited });
      }
    };
    c.stdout!.on('data', onData);
    c.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    void exited.then(({ code }) => reject(new Error(`the demo ended (${code}) before printing the page URL:\n${out}`)));
  });
}

/** Waits (deadline, not sleep) until `fn` holds in the page. */
async function until(page: Page, fn: () => boolean, timeout: number, what: string): Promise<void> {
  try {
    await page.waitForFunction(fn, null, { timeout, polling: 250 });
  } catch (err) {
    const state = await page.evaluate(() => JSON.stringify(window.__demo?.state?.status ?? null)).catch(() => '?');
    throw new Error(`${what}: not seen within ${timeout} ms (status ${state}): ${(err as Error).message}`);
  }
}

describe('demo page: its data', () => {
  it('the live stale count gives each stale read its age and counts those beyond the bound', () => {
    const t = new Truth(new Map([[1, 1]]), 0, 1_000);
    t.commit(1, 2, 100);
    t.commit(1, 3, 900);
    t.read(1, 1, 1_500); // older than v2 (committed at 100): 1400 ms, beyond the bound
    t.read(1, 2, 1_000); // older than v3 (900): 100 ms
    t.read(1, 3, 2_000); // current
    expect([t.liveStale, t.liveBeyond]).toEqual([2, 1]);
    expect(t.drainLiveAges()).toEqual([1_400, 100]);
    expect(t.drainLiveAges()).toEqual([]);
    const exact = t.finish(1_000);
    expect([exact.staleReads, exact.staleBeyondBound]).toEqual([2, 1]);
  });

  it('the report inlines everything and data cannot close its <script>', () => {
    const board = new LiveBoard({ boundMs: 1_000, durationMs: 1_000, scenarios: ['bus off'], caches: '1 cache' });
    board.status({ phase: 'load', s: 0 });
    board.mark('chaos', '</script><script>window.bad = 1</script>');
    board.close();
    const html = reportPage(loadPageAssets(), board.state);
    expect(html).not.toMatch(/<(script|link)[^>]+(src|href)=/); // nothing fetched
    expect(html).not.toContain('<script>window.bad');
    expect(html.match(/<script>/g)?.length).toBe(html.match(/<\/script>/g)?.length);
    expect(board.state.status.phase).toBe('stopped'); // closed before done
  });

  it('--report into a directory that does not exist: exit 2 before anything starts', async () => {
    const c = spawn(process.execPath, [MAIN, '--report', join(tmp, 'no', 'such', 'dir', 'r.html')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const code = await new Promise<number | null>((resolve) => c.on('close', resolve));
    expect(code).toBe(2);
    expect(err).toMatch(/--report .*directory does not exist/);
  });
});

describe('demo live page in chromium', () => {
  it.skipIf(!haveChromium)('shows stale reads with the bus off, none beyond the bound with it on, chaos markers; the report renders offline', async () => {
    const report = join(tmp, 'report.html');
    const demo = await startDemo(report);

    context = await chromium.launchPersistentContext(join(tmp, 'profile'), {
      executablePath: CHROMIUM, headless: true, viewport: { width: 1280, height: 1100 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    // Nothing but the demo's own server (and files) may be asked for anything.
    const outside: string[] = [];
    await context.route((url) => !url.href.startsWith(demo.url) && url.protocol !== 'file:', (route) => {
      outside.push(route.request().url());
      void route.abort();
    });
    const errors: string[] = [];
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(demo.url);
    await until(page, () => window.__demo?.ready === true, 30_000, 'the page connected');

    // bus off: the stale-read series rises above zero, and the chart holds that point.
    await until(page, () => {
      const st = window.__demo!.state!;
      const off = st.scenarios.indexOf('bus off');
      return st.samples.some((p) => p.s === off && p.stale > 0);
    }, 120_000, 'a bus-off sample with stale reads');
    const plotted = await page.evaluate(() => {
      const st = window.__demo!.state!;
      const col = window.__demo!.charts[0]!.u.data[1 + 2 * st.scenarios.indexOf('bus off')]!; // stale chart: 2 measures per scenario
      return col.some((v) => v !== null && v > 0);
    });
    expect(plotted).toBe(true);

    // bus on: once its load is over, every one of its samples has zero stale reads beyond the bound.
    await until(page, () => {
      const st = window.__demo!.state!;
      return st.status.phase === 'done' || st.status.s > st.scenarios.indexOf('bus on');
    }, 120_000, 'bus on finished');
    const busOn = await page.evaluate(() => {
      const st = window.__demo!.state!;
      const on = st.scenarios.indexOf('bus on');
      const mine = st.samples.filter((p) => p.s === on);
      return { samples: mine.length, reads: mine.reduce((n, p) => n + p.reads, 0), beyond: mine.reduce((n, p) => n + p.beyond, 0) };
    });
    expect(busOn.samples).toBeGreaterThanOrEqual(3);
    expect(busOn.reads).toBeGreaterThan(0);
    expect(busOn.beyond).toBe(0);

    // chaos: its fault steps appear as markers (list and charts), and the caches' gaps after the restart.
    await page.locator('#markers li[data-kind="chaos"]').first().waitFor({ timeout: 120_000 });
    await until(page, () => window.__demo!.state!.status.phase === 'done', 120_000, 'the final table');
    const end = await page.evaluate(() => {
      const st = window.__demo!.state!;
      return { markers: st.markers, results: st.results.map((r) => ({ name: r.name, ok: r.ok })) };
    });
    const chaos = end.markers.filter((m) => m.kind === 'chaos').map((m) => m.label);
    expect(chaos.some((l) => l.startsWith('CLIENT KILL'))).toBe(true);
    expect(chaos.some((l) => l.startsWith('Redis restart'))).toBe(true);
    expect(end.markers.some((m) => m.kind === 'gap' && /restart/.test(m.label))).toBe(true);
    expect(end.results).toEqual([{ name: 'bus off', ok: true }, { name: 'bus on', ok: true }, { name: 'chaos', ok: true }]);
    expect(await page.locator('#results tr').count()).toBe(4); // head + 3 rows
    await page.screenshot({ path: SCREENSHOT ?? join(tmp, 'demo-page.png'), fullPage: true });
    if (SCREENSHOT) console.log(`demo-page.test: screenshot written to ${SCREENSHOT}`);

    const { code, out } = await demo.exited;
    expect(code, out).toBe(0);
    expect(existsSync(report)).toBe(true);

    // The report: from disk, the demo gone, no request leaves the file; same charts, with data.
    const rp = await context.newPage();
    rp.on('pageerror', (e) => errors.push(e.message));
    await rp.goto(pathToFileURL(report).href);
    await until(rp, () => window.__demo?.ready === true, 30_000, 'the report rendered');
    const charts = await rp.evaluate(() => {
      const d = window.__demo!;
      // Pixels in each chart's canvas drawn in a scenario's colour: the lines were drawn.
      const colours = [[0xd6, 0x27, 0x28], [0x2c, 0xa0, 0x2c], [0xff, 0x7f, 0x0e]];
      return {
        report: d.report,
        points: d.charts.map((c) => c.u.data[0]!.length),
        drawn: [...document.querySelectorAll('.chart canvas')].map((cv) => {
          const c = cv as Canvas;
          const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 0; i < px.length; i += 4) {
            if (colours.some(([r, g, b]) => Math.abs(px[i]! - r!) < 8 && Math.abs(px[i + 1]! - g!) < 8 && Math.abs(px[i + 2]! - b!) < 8)) n++;
          }
          return n;
        }),
        rows: document.querySelectorAll('#results tr').length,
        chaosMarkers: document.querySelectorAll('#markers li[data-kind="chaos"]').length,
      };
    });
    expect(charts.report).toBe(true);
    expect(charts.points).toHaveLength(6);
    for (const n of charts.points) expect(n).toBeGreaterThanOrEqual(9); // ≥ 3 samples per scenario
    expect(charts.drawn).toHaveLength(6);
    for (const n of charts.drawn) expect(n).toBeGreaterThan(50);
    expect(charts.rows).toBe(4);
    expect(charts.chaosMarkers).toBeGreaterThan(0);
    expect(outside).toEqual([]);
    expect(errors).toEqual([]);
  }, 400_000);
});
