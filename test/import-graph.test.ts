import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * The import graph of the package (issue 14), checked on the build (dist/: run tsc first) in
 * child processes whose module resolution is recorded by loader hooks
 * (fixtures/peer-hooks.mjs): the core entry loads no optional library, each guarded subpath
 * fails with one sentence naming the missing package, and no import circle runs through the
 * sources of worker-runtime/.
 */
const exec = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(ROOT, 'dist', 'worker-runtime');
const REGISTER = join(ROOT, 'test', 'fixtures', 'peer-register.mjs');
const OPTIONAL = ['bullmq', 'pg', 'piscina', 'prom-client'];
const GUARDED = { postgres: 'pg', 'write-behind': 'bullmq', piscina: 'piscina', metrics: 'prom-client' } as const;
const tmp = mkdtempSync(join(tmpdir(), 'cachebus-graph-'));
let runs = 0;

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs an ES module program with the hooks; returns its stdout and the bare packages it resolved. */
async function run(program: string, hide: readonly string[] = []): Promise<{ stdout: string; resolved: string[] }> {
  const log = join(tmp, `resolved-${runs++}.log`);
  const { stdout } = await exec(process.execPath, ['--import', pathToFileURL(REGISTER).href, '--input-type=module', '-e', program], {
    env: { ...process.env, CACHEBUS_RESOLVED_LOG: log, CACHEBUS_HIDE: hide.join(',') },
    timeout: 30_000,
  });
  let resolved: string[] = [];
  try {
    resolved = [...new Set(readFileSync(log, 'utf8').split('\n').filter((s) => s !== ''))].sort();
  } catch { /* nothing bare was resolved */ }
  return { stdout, resolved };
}

const url = (path: string): string => JSON.stringify(pathToFileURL(join(DIST, path)).href);
const isOptional = (p: string): boolean => OPTIONAL.includes(p) || p.startsWith('pg-') || p.startsWith('@types/');

describe('the core entry (cachebus)', () => {
  const program = `
    const m = await import(${url('index.js')});
    const cache = await m.createCache({ redis: false, namespace: 'graph', maxEntries: 10 });
    console.log(JSON.stringify(await cache.get('k', () => 41 + 1)));
    await cache.close();`;

  it('loads none of bullmq, pg, piscina, prom-client', async () => {
    const { stdout, resolved } = await run(program);
    expect(stdout.trim()).toBe('42');
    expect(resolved.filter(isOptional)).toEqual([]);
    expect(resolved).toEqual(expect.arrayContaining(['ioredis', 'lru-cache']));
  });

  it('runs with the optional libraries absent', async () => {
    const { stdout } = await run(program, OPTIONAL);
    expect(stdout.trim()).toBe('42');
  });

  it('declares nothing from an optional library (its .d.ts files, followed from index.d.ts)', () => {
    const seen = new Set<string>();
    const bad: string[] = [];
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = readFileSync(file, 'utf8');
      for (const [, spec] of text.matchAll(/(?:from\s+|import\()['"]([^'"]+)['"]/g)) {
        if (spec!.startsWith('.')) visit(resolve(dirname(file), spec!.replace(/\.js$/, '.d.ts')));
        else if (isOptional(spec!.startsWith('@') ? spec!.split('/').slice(0, 2).join('/') : spec!.split('/')[0]!)) {
          bad.push(`${relative(ROOT, file)} → ${spec}`);
        }
      }
    };
    visit(join(DIST, 'index.d.ts'));
    expect(seen.size).toBeGreaterThan(5);
    expect(bad).toEqual([]);
  });
});

describe('the guarded subpaths', () => {
  for (const [sub, peer] of Object.entries(GUARDED)) {
    it(`cachebus/${sub} without ${peer}: MissingPeerError naming ${peer}`, async () => {
      const { stdout } = await run(`
        try {
          await import(${url(`${sub}/entry.js`)});
          console.log('loaded');
        } catch (err) {
          console.log(JSON.stringify({ name: err.name, code: err.code, message: err.message }));
        }`, [peer]);
      expect(JSON.parse(stdout)).toEqual({
        name: 'MissingPeerError',
        code: 'E_MISSING_PEER',
        message: `cachebus/${sub} needs the package ${peer}, which is not installed: npm install ${peer}`,
      });
    });

    if (sub === 'write-behind') {
      it('cachebus/write-behind without bullmq nor pg: one sentence naming both', async () => {
        const { stdout } = await run(`
          await import(${url('write-behind/entry.js')}).catch((err) => console.log(JSON.stringify({ message: err.message, peers: err.peers })));`,
        ['bullmq', 'pg']);
        expect(JSON.parse(stdout)).toEqual({
          message: 'cachebus/write-behind needs the packages bullmq and pg, which are not installed: npm install bullmq pg',
          peers: ['bullmq', 'pg'],
        });
      });
    }

    it(`cachebus/${sub} exports at run time exactly what its types declare (entry.js = index.js)`, async () => {
      const { stdout } = await run(`
        const entry = await import(${url(`${sub}/entry.js`)});
        const index = await import(${url(`${sub}/index.js`)});
        const same = Object.keys(index).every((k) => entry[k] === index[k]);
        console.log(JSON.stringify({ entry: Object.keys(entry).sort(), index: Object.keys(index).sort(), same }));`);
      const r = JSON.parse(stdout) as { entry: string[]; index: string[]; same: boolean };
      expect(r.entry).toEqual(r.index);
      expect(r.same).toBe(true);
    });
  }
});

describe('worker-runtime sources', () => {
  it('have no import circle (type-only imports included)', () => {
    const dir = join(ROOT, 'worker-runtime');
    const files: string[] = [];
    const walk = (d: string): void => {
      for (const f of readdirSync(d)) {
        const p = join(d, f);
        if (statSync(p).isDirectory()) walk(p);
        else if (p.endsWith('.ts')) files.push(p);
      }
    };
    walk(dir);
    const edges = new Map<string, string[]>();
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      const to = [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^'";]*?from\s+'(\.[^']+)'/g)]
        .map(([, s]) => resolve(dirname(f), s!.replace(/\.js$/, '.ts')))
        .filter((p) => p.startsWith(dir));
      edges.set(f, to);
    }
    // Tarjan's strongly connected components: any component of more than one file is a circle.
    let index = 0;
    const idx = new Map<string, number>();
    const low = new Map<string, number>();
    const stack: string[] = [];
    const on = new Set<string>();
    const circles: string[][] = [];
    const strong = (v: string): void => {
      idx.set(v, index);
      low.set(v, index++);
      stack.push(v);
      on.add(v);
      for (const w of edges.get(v) ?? []) {
        if (!idx.has(w)) { strong(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
        else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
      if (low.get(v) === idx.get(v)) {
        const comp: string[] = [];
        let w: string;
        do { w = stack.pop()!; on.delete(w); comp.push(relative(ROOT, w)); } while (w !== v);
        if (comp.length > 1 || (edges.get(v) ?? []).includes(v)) circles.push(comp.sort());
      }
    };
    for (const f of files) if (!idx.has(f)) strong(f);
    expect(edges.size).toBeGreaterThan(20);
    expect(circles).toEqual([]);
  });
});
