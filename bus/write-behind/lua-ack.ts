import { LUA_BULK, Script } from '../script.js';

/** After a flush: compare-and-delete of the overlay, end of the claim, dead letters. */
export const ackScript = new Script('ack', 4, String.raw`--[[
  ack: for each flushed row, deletes the overlay entry only if it still holds the flushed
  version (compare-and-delete); a row written again during the flush is already dirty again
  and stays. Rows Postgres refused are pushed to the dead-letter list in the same step. Then
  the claim is forgotten (its lease no longer matters).

  Input:
    KEYS[1] overlay    hash  id -> "<version>:<row json>"
    KEYS[2] claims     zset  claim id -> lease end
    KEYS[3] claim ids  hash  claim id -> JSON array of its ids
    KEYS[4] dead       list of dead-letter records (JSON)
    ARGV[1] claim id
    ARGV[2], ARGV[3], ARGV[4], ... id, version, dead-letter record ('' when flushed), ...
  Output:
    { rows removed from the overlay, rows written again meanwhile }
]]
${LUA_BULK}
local ids, vers = {}, {}
for i = 2, #ARGV, 3 do
  ids[#ids + 1] = ARGV[i]
  vers[#vers + 1] = ARGV[i + 1]
  if ARGV[i + 2] ~= '' then redis.call('RPUSH', KEYS[4], ARGV[i + 2]) end
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
return { #done, superseded }
`);
