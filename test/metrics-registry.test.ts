import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCache, InvalidOptionError, type Cache } from '../worker-runtime/index.js';
import {
  CacheMetrics, reportMetricsToParent, SidecarMetrics, ThreadMetricsCollector, type RegistryLike,
} from '../worker-runtime/metrics/index.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';

/**
 * An app with its own copy of prom-client (another version than the one cachebus resolves, as
 * when two copies sit side by side) passes its Registry. prom-client is installed into a temp
 * dir (the shared node_modules is not touched): its classes are not ours, so `instanceof` fails.
 */
const exec = promisify(execFile);
const THEIR_VERSION = '15.0.0';
let dir: string;
let Their: { Registry: new () => RegistryLike; Counter: new (o: { name: string; help: string; registers: RegistryLike[] }) => { inc(): void } };
let cache: Cache<{}>;
const prefix = randomPrefix();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cachebus-promclient-'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'their-app', private: true }));
  await exec('npm', ['install', `prom-client@${THEIR_VERSION}`, '--no-audit', '--no-fund', '--prefer-offline'], { cwd: dir });
  const mod = await import(pathToFileURL(join(dir, 'node_modules', 'prom-client', 'index.js')).href) as { default: typeof Their };
  Their = mod.default;
  cache = await createCache<{}>({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 100 });
}, 120_000);

afterAll(async () => {
  await cache?.close();
  await cleanupPrefix(prefix);
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe('a Registry of the app\'s own prom-client copy', () => {
  it('is another copy than ours', async () => {
    const ours = await import('prom-client');
    expect(new Their.Registry()).not.toBeInstanceOf(ours.Registry);
  });

  it('CacheMetrics registers into it, also when answering a cluster primary (prom-client checks instanceof there)', async () => {
    const registry = new Their.Registry();
    const appCounter = new Their.Counter({ name: 'app_requests_total', help: 'the app\'s own', registers: [registry] });
    appCounter.inc();
    const m = new CacheMetrics({ registry, worker: 'w1', cluster: true });
    m.add(cache);
    try {
      await cache.get('user:1', () => ({ name: 'Ada' }));
      const text = await registry.metrics();
      expect(text).toMatch(/^cachebus_misses_total\{namespace="shop",worker="w1"\} 1$/m);
      expect(text).toMatch(/^app_requests_total 1$/m);
      expect(m.registry).toBe(registry);
    } finally {
      await m.close();
    }
    expect(await registry.metrics()).not.toMatch(/cachebus_/);
  });

  it('SidecarMetrics and the thread collector take it too', async () => {
    const registry = new Their.Registry();
    const s = new SidecarMetrics({ registry, worker: 'sc1' });
    expect(await registry.metrics()).toMatch(/^# TYPE cachebus_/m);
    expect(s.registry).toBe(registry);
    const stop = reportMetricsToParent(registry, `cachebus-test-${prefix}`);
    const collector = new ThreadMetricsCollector({ registries: [registry], channel: `cachebus-test-${prefix}` });
    try {
      expect(await (await collector.aggregate()).metrics()).toMatch(/^# TYPE cachebus_/m);
    } finally {
      stop();
      collector.close();
    }
  });

  it('anything else is refused at once, naming the option', () => {
    expect(() => new CacheMetrics({ registry: {} as RegistryLike, cluster: false })).toThrow(InvalidOptionError);
    expect(() => new CacheMetrics({ registry: {} as RegistryLike, cluster: false })).toThrow(/CacheMetrics options\.registry/);
  });
});
