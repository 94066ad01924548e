import { LUA_APPEND } from '../lua-append.js';
import { LUA_NOW, Script } from '../script.js';

/** Makes write-behind rows durable and tells every cache, in one atomic step. */
export const writeScript = new Script('write', 7, String.raw`--[[
  write: assigns versions, sets the pending overlay (each row tagged with the hash of the
  definition it was written with) and marks the rows dirty; records that definition (so a
  Redis that lost its data learns it again from the first write after the loss); and appends
  the invalidation of the rows' cache keys to the stream (chained, bus/lua-append.ts) — all
  atomically, so no crash can leave the rows pending without the other workers being told. A
  row refused for back-pressure changes nothing (when every row is refused, nothing is appended).

  Input:
    KEYS[1] overlay  hash  id -> "<version>:<definition hash>:<row json>"
    KEYS[2] dirty    zset  id -> ms when the row may be flushed
    KEYS[3] version  string, last version given out (hybrid logical clock)
    KEYS[4] tick     string, last flush slot that has a tick job
    KEYS[5] entities hash  entity name -> its newest definition (json)
    KEYS[6] defs     hash  "<entity name>:<definition hash>" -> definition (json)
    KEYS[7] stream   the invalidation stream
    ARGV[1] flush delay, ms
    ARGV[2] most pending rows of the entity, 0 for no bound
    ARGV[3] entity name
    ARGV[4] definition hash
    ARGV[5] definition json
    ARGV[6] number of rows, n
    ARGV[7], ARGV[8], ... id, row json, id, row json, ... (2n values)
    ARGV[7 + 2n] ... appendArgs(invalidation entries of the rows' cache keys)
  Output:
    { tick delay ms (-1: no tick to add), tick slot, pending rows, version per row (0: refused) }
]]
${LUA_NOW}
${LUA_APPEND}
local delay = tonumber(ARGV[1])
local maxPending = tonumber(ARGV[2])
local due = now + delay
local pending = redis.call('HLEN', KEYS[1])
-- Versions never fall behind the clock (ms * 1000), even if the counter itself was lost.
local floor = now * 1000
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if last < floor then redis.call('SET', KEYS[3], string.format('%.0f', floor)) end
local out = { -1, 0, 0 }
local wrote = false
local prefix = ':' .. ARGV[4] .. ':'
local rowsEnd = 6 + 2 * tonumber(ARGV[6])
for i = 7, rowsEnd, 2 do
  local id = ARGV[i]
  if maxPending > 0 and pending >= maxPending and redis.call('HEXISTS', KEYS[1], id) == 0 then
    out[#out + 1] = 0
  else
    local v = redis.call('INCR', KEYS[3])
    pending = pending + redis.call('HSET', KEYS[1], id, string.format('%.0f', v) .. prefix .. ARGV[i + 1])
    -- NX: a row already dirty keeps its first flush time (a hot row still flushes on time).
    redis.call('ZADD', KEYS[2], 'NX', due, id)
    out[#out + 1] = v
    wrote = true
  end
end
out[3] = pending
if wrote then
  if redis.call('HSETNX', KEYS[6], ARGV[3] .. ':' .. ARGV[4], ARGV[5]) == 1 or redis.call('HEXISTS', KEYS[5], ARGV[3]) == 0 then
    redis.call('HSET', KEYS[5], ARGV[3], ARGV[5])
  end
  cachebus_append_all(KEYS[7], ARGV, rowsEnd + 1)
  local slotMs = math.max(delay, 10)
  local slot = math.floor(due / slotMs) + 1
  local prev = tonumber(redis.call('GET', KEYS[4]) or '0')
  if slot > prev then
    redis.call('SET', KEYS[4], slot, 'PX', slotMs * 10 + 60000)
    out[1] = slot * slotMs - now
    out[2] = slot
  end
end
return out
`);
