import type { RedisClient } from '../connection.js';
import { defineEntity, type Entity, type EntityDefinition } from '../entities.js';

/**
 * Write-behind entity definitions, shared through Redis: a writer records the definition of
 * each entity it writes (`HSET <base>:wb:entities name json`), so a sidecar started with no
 * configuration knows which tables to flush. Definitions are validated (identifiers only,
 * quoted) before any SQL is built from them.
 */
export async function publishDefinition(client: RedisClient, keys: { entities: string; defs: string }, e: Entity): Promise<void> {
  await client.multi().hset(keys.entities, e.name, e.json).hset(keys.defs, `${e.name}:${e.hash}`, e.json).exec();
}

/** Definitions found in Redis; invalid ones are reported to `onInvalid` and skipped. */
export async function readDefinitions(
  client: RedisClient,
  key: string,
  onInvalid: (name: string, err: unknown) => void,
): Promise<Entity[]> {
  const all = await client.hgetall(key);
  const out: Entity[] = [];
  for (const [name, json] of Object.entries(all)) {
    try {
      const def = JSON.parse(json) as EntityDefinition;
      if (def.name !== name || !Array.isArray(def.columns) || typeof def.version !== 'string') throw new Error('not a write-behind entity definition');
      out.push(defineEntity(def));
    } catch (err) {
      onInvalid(name, err);
    }
  }
  return out;
}

/** The definition a row was written with (`<entity>:<hash>` in the defs hash), or undefined. */
export async function readDefinition(client: RedisClient, defsKey: string, name: string, hash: string): Promise<Entity | undefined> {
  const json = await client.hget(defsKey, `${name}:${hash}`);
  if (json === null) return undefined;
  const def = JSON.parse(json) as EntityDefinition;
  if (def.name !== name || !Array.isArray(def.columns) || typeof def.version !== 'string') throw new Error(`not a write-behind entity definition: ${name}:${hash}`);
  const e = defineEntity(def);
  if (e.hash !== hash) throw new Error(`definition ${name}:${hash} does not match its hash`);
  return e;
}
