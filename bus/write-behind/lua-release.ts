import { LUA_NOW, Script } from '../script.js';

/** Gives a claim back (Postgres unreachable): its rows are due again at once. */
export const releaseScript = new Script('release', 4, String.raw`--[[
  release: ends a claim early, for rows that could not be flushed now: those still pending
  become due again (a row written again meanwhile keeps its own flush time).

  Input:
    KEYS[1] dirty      zset  id -> ms when the row may be flushed
    KEYS[2] overlay    hash  id -> "<version>:<row json>"
    KEYS[3] claims     zset  claim id -> lease end
    KEYS[4] claim ids  hash  claim id -> JSON array of its ids
    ARGV[1] claim id
  Output:
    number of rows due again
]]
${LUA_NOW}
local list = redis.call('HGET', KEYS[4], ARGV[1])
local n = 0
if list then
  for _, id in ipairs(cjson.decode(list)) do
    if redis.call('HEXISTS', KEYS[2], id) == 1 then
      n = n + redis.call('ZADD', KEYS[1], 'NX', now, id)
    end
  end
end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return n
`);
