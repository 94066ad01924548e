import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { busKeys } from '../bus/keys.js';
import { WorkerProc } from './helpers/procs.js';
import { cleanupPrefix, randomPrefix, REDIS_URL } from './helpers/redis.js';

const run = promisify(execFile);
let prefix: string;
let workers: WorkerProc[] = [];

const start = (n: number, extra: object = {}): Promise<WorkerProc[]> =>
  Promise.all(Array.from({ length: n }, () => WorkerProc.start({ redis: REDIS_URL, namespace: 'shop', prefix, maxEntries: 1000, ...extra })))
    .then((ws) => { workers.push(...ws); return ws; });

beforeEach(() => { prefix = randomPrefix(); });
afterEach(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  workers = [];
  await cleanupPrefix(prefix);
});

describe('several OS processes', () => {
  it('an invalidate() in one process drops the key in 4 others', async () => {
    const [pub, ...readers] = await start(5);
    for (const w of readers) await w.call('get', { key: 'product:42', value: `v-${w.origin}` });
    for (const w of readers) expect(await w.call('peek', { key: 'product:42' })).not.toBeNull();
    const drops = readers.map((w) => w.wait<{ keys: number; dropped: number }>('received'));
    await pub!.call('invalidate', { keys: ['product:42'] });
    for (const d of await Promise.all(drops)) expect(d).toMatchObject({ keys: 1, dropped: 1 });
    for (const w of readers) expect(await w.call('peek', { key: 'product:42' })).toBeNull();
  });

  it('I1 across processes: a held load overtaken by a remote invalidation is returned, never stored', async () => {
    const [a, b] = await start(2);
    await a!.call('hold', { key: 'k' }); // the loader has started and waits
    const applied = a!.wait<{ keys: number }>('received');
    await b!.call('invalidate', { keys: ['k'] });
    await applied;
    expect(await a!.call('release', { key: 'k', value: 'old' })).toBe('old');
    expect(await a!.call('peek', { key: 'k' })).toBeNull();
    expect(await a!.call('get', { key: 'k', value: 'new' })).toEqual({ value: 'new', loaded: true });
  });

  it('any client can publish with one XADD: redis-cli drops the key in every worker', async () => {
    const ws = await start(3);
    for (const w of ws) await w.call('get', { key: 'product:42', value: 1, tags: ['category:7'] });
    for (const w of ws) await w.call('get', { key: 'product:43', value: 1, tags: ['category:7'] });
    const port = new URL(REDIS_URL).port || '6379';
    const stream = busKeys(prefix, 'shop').stream;
    let drops = ws.map((w) => w.wait('received'));
    await run('redis-cli', ['-h', '127.0.0.1', '-p', port, 'XADD', stream, '*', 'v', '1', 'k', '["product:42"]']);
    await Promise.all(drops);
    for (const w of ws) {
      expect(await w.call('peek', { key: 'product:42' })).toBeNull();
      expect(await w.call('peek', { key: 'product:43' })).toBe(1);
    }
    drops = ws.map((w) => w.wait('received'));
    await run('redis-cli', ['-h', '127.0.0.1', '-p', port, 'XADD', stream, '*', 'v', '1', 'g', '["category:7"]']);
    await Promise.all(drops);
    for (const w of ws) expect(await w.call('peek', { key: 'product:43' })).toBeNull();
  });

  it('I7 across processes: bad entries are counted, the worker keeps serving and applying', async () => {
    const [w] = await start(1);
    await w!.call('get', { key: 'a', value: 1 });
    await w!.call('get', { key: 'b', value: 2 });
    const port = new URL(REDIS_URL).port || '6379';
    const stream = busKeys(prefix, 'shop').stream;
    const bad = w!.wait('badEntry');
    await run('redis-cli', ['-p', port, 'XADD', stream, '*', 'v', '1', 'k', '{oops']);
    await bad;
    expect(await w!.call('peek', { key: 'b' })).toBe(2);
    const good = w!.wait('received');
    await run('redis-cli', ['-p', port, 'XADD', stream, '*', 'v', '1', 'k', '["a"]']);
    await good;
    expect(await w!.call('peek', { key: 'a' })).toBeNull();
    expect(await w!.call('peek', { key: 'b' })).toBe(2);
  });
});
