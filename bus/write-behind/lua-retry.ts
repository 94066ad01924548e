import { LUA_NOW, Script } from '../script.js';

/** Puts one dead letter back into the overlay with its original version. */
export const retryScript = new Script('retry', 3, String.raw`--[[
  retry: removes one dead-letter record and makes its row pending again with its ORIGINAL
  version, so the version guard still lets any newer row win. If a newer version of the row is
  already pending, the dead letter is dropped: the newer write supersedes it.

  Input:
    KEYS[1] dead     list of dead-letter records
    KEYS[2] overlay  hash  id -> "<version>:<row json>"
    KEYS[3] dirty    zset  id -> ms when the row may be claimed
    ARGV[1] the record, exactly as stored
    ARGV[2] id
    ARGV[3] version
    ARGV[4] row json
    ARGV[5] definition hash ('' when unknown)
  Output:
    1 requeued, 0 superseded by a newer pending write, -1 record not found (already handled)
]]
${LUA_NOW}
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return -1 end
local row = redis.call('HGET', KEYS[2], ARGV[2])
if row then
  local v = string.match(row, '^(%d+):')
  if v and (#v > #ARGV[3] or (#v == #ARGV[3] and v >= ARGV[3])) then return 0 end
end
local def = ''
if ARGV[5] ~= '' then def = ARGV[5] .. ':' end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ':' .. def .. ARGV[4])
redis.call('ZADD', KEYS[3], 'NX', now, ARGV[2])
return 1
`);
