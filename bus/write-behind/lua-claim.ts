import { LUA_NOW, Script } from '../script.js';

/** Takes due rows of an entity for one flusher (a claim with a lease). */
export const claimScript = new Script('claim', 4, String.raw`--[[
  claim: first gives back the rows of claims whose lease ran out (a flusher died or stalled:
  they become due again), then takes up to N due rows: they leave the dirty set (one
  ZREMRANGEBYRANK, they are its lowest ranks) and are recorded under a new claim id until
  the flusher acknowledges them. Claim ids are unique by construction: the lease end plus a
  counter (field '#seq' of the claim ids hash), never derived from the rows. A row written
  again meanwhile is simply dirty again; flushing
  two versions at once is harmless under the version guard. A dirty id with no overlay row is
  dropped.

  Input:
    KEYS[1] dirty      zset  id -> ms when the row may be flushed
    KEYS[2] overlay    hash  id -> "<version>:<row json>"
    KEYS[3] claims     zset  claim id -> lease end, ms
    KEYS[4] claim ids  hash  claim id -> JSON array of its ids; field '#seq': last claim number
    ARGV[1] most rows
    ARGV[2] lease, ms
  Output:
    { claim id ('' when nothing was due), id, "<version>:<row json>", id, ... }
]]
${LUA_NOW}
local expired = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, 100)
for _, c in ipairs(expired) do
  local list = redis.call('HGET', KEYS[4], c)
  if list then
    for _, id in ipairs(cjson.decode(list)) do
      if redis.call('HEXISTS', KEYS[2], id) == 1 then redis.call('ZADD', KEYS[1], 'NX', now, id) end
    end
    redis.call('HDEL', KEYS[4], c)
  end
  redis.call('ZREM', KEYS[3], c)
end
local ids = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then return { '' } end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #ids - 1)
local lease = now + tonumber(ARGV[2])
local claim = lease .. ':' .. redis.call('HINCRBY', KEYS[4], '#seq', 1)
local out = { claim }
local claimed = {}
for i = 1, #ids, 1000 do
  local rows = redis.call('HMGET', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
  for j, row in ipairs(rows) do
    if row then
      local id = ids[i + j - 1]
      claimed[#claimed + 1] = id
      out[#out + 1] = id
      out[#out + 1] = row
    end
  end
end
if #claimed == 0 then return { '' } end
redis.call('HSET', KEYS[4], claim, cjson.encode(claimed))
redis.call('ZADD', KEYS[3], lease, claim)
return out
`);
