import { createHash } from 'node:crypto';
import type { RedisClient } from './connection.js';

/**
 * A Lua script run with EVALSHA, falling back to EVAL once when the server does not know it
 * (first use, or after a restart / SCRIPT FLUSH). Does not touch the client (no defineCommand),
 * so it works on a connection the caller shares.
 */
export class Script {
  readonly name: string;
  readonly numberOfKeys: number;
  readonly lua: string;
  readonly sha: string;

  constructor(name: string, numberOfKeys: number, lua: string) {
    this.name = name;
    this.numberOfKeys = numberOfKeys;
    this.lua = lua;
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  /**
   * EVALSHA only: rejects with NOSCRIPT when the server does not know the script. For a call
   * pipelined with others, where a fallback EVAL would be queued behind them.
   */
  runLoaded<T = unknown>(client: RedisClient, keys: readonly string[], args: readonly (string | number)[]): Promise<T> {
    return client.evalsha(this.sha, this.numberOfKeys, ...keys, ...args) as Promise<T>;
  }

  async run<T = unknown>(client: RedisClient, keys: readonly string[], args: readonly (string | number)[]): Promise<T> {
    if (keys.length !== this.numberOfKeys) throw new Error(`script ${this.name} takes ${this.numberOfKeys} keys`);
    try {
      return (await client.evalsha(this.sha, this.numberOfKeys, ...keys, ...args)) as T;
    } catch (err) {
      if (!/NOSCRIPT/.test(String((err as Error)?.message))) throw err;
      return (await client.eval(this.lua, this.numberOfKeys, ...keys, ...args)) as T;
    }
  }
}

/** Current Redis time in ms, as the scripts compute it. */
export const LUA_NOW = `local __t = redis.call('TIME')
local now = tonumber(__t[1]) * 1000 + math.floor(tonumber(__t[2]) / 1000)`;

/**
 * `bulk(cmd, key, list, from, to)`: runs `cmd key list[from..to]` in chunks small enough for
 * Lua's unpack limit, and returns the replies concatenated.
 */
export const LUA_BULK = `local function bulk(cmd, key, list, from, to)
  local out = {}
  for i = from, to, 1000 do
    local r = redis.call(cmd, key, unpack(list, i, math.min(i + 999, to)))
    if type(r) == 'table' then for _, x in ipairs(r) do out[#out + 1] = x end end
  end
  return out
end`;

