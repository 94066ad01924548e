import type { RedisClient } from '../connection.js';
import { parseInfo } from '../connection.js';

/** What makes the write-behind durability claim weaker than documented, as read from INFO. */
export interface DurabilityProblems {
  /** maxmemory-policy is not `noeviction`: Redis may evict pending rows under memory pressure. */
  readonly eviction?: string;
  /** AOF is off: a Redis crash or restart loses every pending row since the last RDB save. */
  readonly aofOff?: boolean;
}

/** Reads `INFO persistence` and `INFO memory` (works where CONFIG is disabled). */
export async function checkDurability(client: RedisClient): Promise<DurabilityProblems> {
  const persistence = parseInfo(String(await client.info('persistence')));
  const memory = parseInfo(String(await client.info('memory')));
  const policy = memory.get('maxmemory_policy') ?? 'noeviction';
  const out: { eviction?: string; aofOff?: boolean } = {};
  if (policy !== 'noeviction') out.eviction = policy;
  if (persistence.get('aof_enabled') === '0') out.aofOff = true;
  return out;
}

let warned = false;

/** Code of the start-up warning (process.emitWarning). */
export const DURABILITY_WARNING = 'CACHEBUS_WB_DURABILITY';

/**
 * Warns once per process (process.emitWarning, code CACHEBUS_WB_DURABILITY) when Redis does not
 * run with `maxmemory-policy noeviction` and AOF. Never throws: the check is advisory.
 */
export async function warnIfNotDurable(client: RedisClient): Promise<DurabilityProblems | undefined> {
  let p: DurabilityProblems;
  try {
    p = await checkDurability(client);
  } catch {
    return undefined;
  }
  if (!warned && (p.eviction !== undefined || p.aofOff)) {
    warned = true;
    const why = [
      p.eviction !== undefined ? `maxmemory-policy is ${p.eviction} (pending rows may be evicted; set noeviction)` : '',
      p.aofOff ? 'AOF is off (a Redis crash loses pending rows; set appendonly yes)' : '',
    ].filter(Boolean).join(' and ');
    process.emitWarning(`cachebus write-behind: ${why}. See docs/write-behind.md#redis-requirements`, { code: DURABILITY_WARNING });
  }
  return p;
}
