import { LUA_BULK, LUA_NOW, Script } from '../script.js';

/** After a flush: compare-and-delete of the overlay, end of the claim, dead letters, deferred rows. */
export const ackScript = new Script('ack', 6, String.raw`--[[
  ack: for each flushed row, deletes the overlay entry only if it still holds the flushed
  version (compare-and-delete); a row written again during the flush is already dirty again
  and stays. Rows Postgres refused are pushed to the dead-letter list in the same step (the
  list is trimmed to its bound, the oldest records dropped and counted). Deferred rows (their
  parent row is itself still pending) stay in the overlay and are due again after a delay.
  Then the claim is forgotten (its lease no longer matters).

  Input:
    KEYS[1] overlay    hash  id -> "<version>:<definition hash>:<row json>"
    KEYS[2] claims     zset  claim id -> lease end
    KEYS[3] claim ids  hash  claim id -> JSON array of its ids
    KEYS[4] dead       list of dead-letter records (JSON)
    KEYS[5] dirty      zset  id -> ms when the row may be flushed
    KEYS[6] dropped    string, dead letters dropped by the bound so far
    ARGV[1] claim id
    ARGV[2] delay of deferred rows, ms
    ARGV[3] most dead letters kept (0: no bound)
    ARGV[4], ARGV[5], ARGV[6], ... id, version, '' (flushed) | dead-letter record | '!' (deferred), ...
  Output:
    { rows removed from the overlay, rows written again meanwhile, dead letters dropped by the bound }
]]
${LUA_NOW}
${LUA_BULK}
local ids, vers = {}, {}
local pushed = 0
for i = 4, #ARGV, 3 do
  local mark = ARGV[i + 2]
  if mark == '!' then
    if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then redis.call('ZADD', KEYS[5], 'NX', now + tonumber(ARGV[2]), ARGV[i]) end
  else
    ids[#ids + 1] = ARGV[i]
    vers[#vers + 1] = ARGV[i + 1]
    if mark ~= '' then
      redis.call('RPUSH', KEYS[4], mark)
      pushed = pushed + 1
    end
  end
end
local dropped = 0
local bound = tonumber(ARGV[3])
if pushed > 0 and bound > 0 then
  local len = redis.call('LLEN', KEYS[4])
  if len > bound then
    dropped = len - bound
    redis.call('LTRIM', KEYS[4], dropped, -1)
    redis.call('INCRBY', KEYS[6], dropped)
  end
end
local done, superseded = {}, 0
for i = 1, #ids, 1000 do
  local rows = redis.call('HMGET', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #rows do
    local row, ver = rows[j], vers[i + j - 1]
    if row and string.sub(row, 1, #ver + 1) == ver .. ':' then
      done[#done + 1] = ids[i + j - 1]
    elseif row then
      superseded = superseded + 1
    end
  end
end
if #done > 0 then bulk('HDEL', KEYS[1], done, 1, #done) end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return { #done, superseded, dropped }
`);
