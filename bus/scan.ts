import type { Redis } from 'ioredis';

/** Every key matching `pattern`, walking the whole SCAN cursor (never KEYS). For tools and cleanup, not hot paths. */
export async function scanKeys(client: Redis, pattern: string, count = 1000): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', count);
    cursor = next;
    found.push(...keys);
  } while (cursor !== '0');
  return found;
}

/** Deletes every key matching `pattern` (SCAN + UNLINK, never FLUSHALL); resolves with how many. */
export async function unlinkMatching(client: Redis, pattern: string, count = 1000): Promise<number> {
  let removed = 0;
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', count);
    cursor = next;
    if (keys.length > 0) removed += await client.unlink(...keys);
  } while (cursor !== '0');
  return removed;
}
