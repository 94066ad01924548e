import { existsSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LiveBoard, LiveUpdate } from './live.js';

/** The page's files: its own (demo-workers/page/) and uPlot's (node_modules/uplot/dist). */
export interface PageAssets {
  readonly html: string;
  readonly files: ReadonlyMap<string, { readonly type: string; readonly body: string }>;
}

const PAGE_FILES: Record<string, string> = { 'page.js': 'text/javascript', 'page.css': 'text/css' };
const UPLOT_FILES: Record<string, string> = { 'uPlot.iife.min.js': 'text/javascript', 'uPlot.min.css': 'text/css' };

/**
 * Reads the page's files once. They are read from the source tree (demo-workers/page/) and from
 * uPlot's package, so no build step copies them. Throws with a readable message when one is
 * missing (uPlot is a devDependency; an image with dist/ only has no page).
 */
export function loadPageAssets(): PageAssets {
  // Compiled: dist/demo-workers/page-server.js; run from source (tests): demo-workers/page-server.ts.
  const pageDir = [new URL('../../demo-workers/page/', import.meta.url), new URL('./page/', import.meta.url)]
    .map((u) => fileURLToPath(u)).find((d) => existsSync(join(d, 'index.html')));
  if (pageDir === undefined) throw new Error('the page\'s files (demo-workers/page/) are not here');
  let uplotDir: string;
  try {
    uplotDir = dirname(createRequire(import.meta.url).resolve('uplot'));
  } catch {
    throw new Error('the uplot package is not installed (npm install)');
  }
  const files = new Map<string, { type: string; body: string }>();
  for (const [name, type] of Object.entries(PAGE_FILES)) files.set(name, { type, body: readFileSync(join(pageDir, name), 'utf8') });
  for (const [name, type] of Object.entries(UPLOT_FILES)) files.set(name, { type, body: readFileSync(join(uplotDir, name), 'utf8') });
  return { html: readFileSync(join(pageDir, 'index.html'), 'utf8'), files };
}

/** JSON that is safe inside a <script> element. */
const scriptJson = (x: unknown): string => JSON.stringify(x).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');

/** index.html with its head filled: links to /assets/… (live) or everything inlined (report). */
function fill(assets: PageAssets, head: string): string {
  return assets.html.replace('<!--HEAD-->', () => head);
}

/** The live page: assets by URL, data over /events. */
export function livePage(assets: PageAssets): string {
  return fill(assets, [
    '<link rel="stylesheet" href="/assets/uPlot.min.css">',
    '<link rel="stylesheet" href="/assets/page.css">',
    '<script src="/assets/uPlot.iife.min.js"></script>',
    '<script src="/assets/page.js" defer></script>',
  ].join('\n'));
}

/** One self-contained HTML file: uPlot, the page's code and the whole run inlined; opens offline. */
export function reportPage(assets: PageAssets, state: LiveBoard['state']): string {
  const file = (name: string): string => assets.files.get(name)!.body;
  const inlineScript = (code: string): string => `<script>${code.replace(/<\/script/gi, '<\\/script')}</script>`;
  return fill(assets, [
    `<style>${file('uPlot.min.css')}</style>`,
    `<style>${file('page.css')}</style>`,
    inlineScript(file('uPlot.iife.min.js')),
    `<script>window.DEMO_REPORT = ${scriptJson(state)};</script>`,
    inlineScript(file('page.js')),
  ].join('\n'));
}

/**
 * Answers the page's requests: `/` (the page), `/assets/<file>`, `/state.json` and `/events`
 * (server-sent events: the whole state first, then every update). Returns false for any other path.
 */
export function servePage(req: IncomingMessage, res: ServerResponse, board: LiveBoard, assets: PageAssets | Error): boolean {
  const path = (req.url ?? '/').split('?')[0]!;
  if (path === '/' || path === '/index.html') {
    if (assets instanceof Error) {
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' }).end(`the demo page is unavailable: ${assets.message}\n`);
    } else {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(livePage(assets));
    }
    return true;
  }
  if (path.startsWith('/assets/')) {
    const f = assets instanceof Error ? undefined : assets.files.get(path.slice('/assets/'.length));
    if (f === undefined) res.writeHead(404).end();
    else res.writeHead(200, { 'content-type': `${f.type}; charset=utf-8` }).end(f.body);
    return true;
  }
  if (path === '/state.json') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify({ now: Date.now(), ...board.state }));
    return true;
  }
  if (path === '/events') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(`retry: 1000\nevent: state\ndata: ${JSON.stringify({ now: Date.now(), ...board.state })}\n\n`);
    const send = (u: LiveUpdate | null): void => {
      if (u === null) res.end();
      else res.write(`event: update\ndata: ${JSON.stringify(u)}\n\n`);
    };
    const unsubscribe = board.subscribe(send);
    const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    keepAlive.unref();
    res.on('close', () => { unsubscribe(); clearInterval(keepAlive); });
    return true;
  }
  return false;
}
