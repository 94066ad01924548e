import { Script } from './script.js';

/**
 * The four XINFO STREAM counters the reader's gap check needs, without the first and last
 * entries that XINFO STREAM also returns (for 1000-key entries, most of its reply).
 */
export const streamInfoScript = new Script('stream-info', 1, String.raw`--[[
  stream-info
  Input:
    KEYS[1] the invalidation stream
  Output:
    nil when the stream does not exist, else
    { length, last-generated-id, max-deleted-entry-id, entries-added }
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local want = { ['length'] = 1, ['last-generated-id'] = 2, ['max-deleted-entry-id'] = 3, ['entries-added'] = 4 }
local out = { 0, '0-0', '0-0', 0 }
for i = 1, #info, 2 do
  local slot = want[info[i]]
  if slot then out[slot] = info[i + 1] end
end
return out`);
