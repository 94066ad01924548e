import { execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCache, type Cache } from '../worker-runtime/index.js';
import { cleanupPrefix, freePort, randomPrefix, REDIS_URL } from './helpers/redis.js';
import { waitForEvent, until } from './helpers/wait.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli/cachebus.js', import.meta.url));
let prefix: string;
let cache: Cache<{}>;

beforeEach(async () => {
  prefix = randomPrefix();
  cache = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 100 });
});
afterEach(async () => {
  await cache.close();
  await cleanupPrefix(prefix);
});

describe('cachebus CLI', () => {
  it('publish drops a key and a tag in a running cache', async () => {
    await cache.get('product:42', () => 1);
    await cache.get('product:43', () => 1, { tags: ['category:7'] });
    const got = waitForEvent(cache, 'received');
    const { stdout } = await run('node', [CLI, 'publish', '--namespace', 'shop', '--prefix', prefix, '--redis', REDIS_URL, 'product:42', '--tag', 'category:7']);
    expect(stdout.trim()).toMatch(/^\d+-\d+$/);
    await got;
    expect(cache.peek('product:42')).toBeUndefined();
    expect(cache.peek('product:43')).toBeUndefined();
  });

  it('tail prints invalidations as they flow, with origin and lag', async () => {
    const child = spawn('node', [CLI, 'tail', '--namespace', 'shop', '--prefix', prefix, '--redis', REDIS_URL, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    try {
      await until(() => err.includes('tailing'), 10_000, 'tail to start');
      await cache.invalidate('product:42');
      await until(() => out.includes('product:42'), 10_000, 'the tail line');
      const line = JSON.parse(out.trim().split('\n')[0]!) as { keys: string[]; origin: string; lagMs: number };
      expect(line.keys).toEqual(['product:42']);
      expect(line.origin).toBe(cache.bus!.origin);
      expect(line.lagMs).toBeGreaterThanOrEqual(0);
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('exits non-zero with a clear message when Redis is unreachable, and 2 on usage errors', async () => {
    const port = await freePort();
    const err = await run('node', [CLI, 'publish', '--namespace', 'shop', '--redis', `redis://127.0.0.1:${port}`, 'k']).catch((e: unknown) => e) as { code: number; stderr: string };
    expect(err.code).toBe(1);
    expect(err.stderr).toMatch(/cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+.*E_REDIS_UNAVAILABLE/s);
    const usage = await run('node', [CLI, 'publish', 'k']).catch((e: unknown) => e) as { code: number; stderr: string };
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--namespace is required/);
  });
});
