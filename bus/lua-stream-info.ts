import { EPOCH_GROUP_PREFIX } from './lua-append.js';
import { Script } from './script.js';

/**
 * What the reader's checks need to know about the stream, without the first and last entries
 * that XINFO STREAM also returns (for 1000-key entries, most of its reply): four XINFO STREAM
 * counters, and the epoch and chain head kept on the epoch group (bus/lua-append.ts).
 */
export const streamInfoScript = new Script('stream-info', 1, String.raw`--[[
  stream-info
  Input:
    KEYS[1] the invalidation stream
  Output:
    nil when the stream does not exist, else
    { length, last-generated-id, max-deleted-entry-id, entries-added, epoch or '', chain head or '' }
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local want = { ['length'] = 1, ['last-generated-id'] = 2, ['max-deleted-entry-id'] = 3, ['entries-added'] = 4 }
local out = { 0, '0-0', '0-0', 0, '', '' }
local groups = 0
for i = 1, #info, 2 do
  local slot = want[info[i]]
  if slot then out[slot] = info[i + 1] elseif info[i] == 'groups' then groups = info[i + 1] end
end
if groups > 0 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name and string.sub(name, 1, ${EPOCH_GROUP_PREFIX.length}) == '${EPOCH_GROUP_PREFIX}' then
      out[5] = string.sub(name, ${EPOCH_GROUP_PREFIX.length + 1})
      out[6] = last
      break
    end
  end
end
return out`);
