import { LUA_APPEND } from './lua-append.js';
import { Script } from './script.js';

/**
 * The publish script with a pub/sub wake-up (option `wake: 'pubsub'`, docs/wake-up.md): appends
 * the entries to the stream, chained, exactly as `publishScript` does, then PUBLISHes each
 * entry (its ID and fields, as JSON) on the namespace's wake channel.
 *
 * Both happen in one script, so a hint never exists for an entry that is not in the stream.
 * Redis queues the PUBLISH to subscribers while the script runs, and serves the readers blocked
 * on the stream only after the script ends: the hint leaves first. Readers still read and
 * chain-check every entry from the stream; the hint only lets them drop the keys earlier.
 */
export const publishWakeScript = new Script('publish-wake', 1, String.raw`--[[
  publish-wake: publish (bus/lua-append.ts) plus one PUBLISH per entry.
  Input:
    KEYS[1] the invalidation stream
    ARGV[1] the wake channel (not a key: pub/sub is not slot-bound)
    ARGV[2..] appendArgs(...)
  Output:
    the IDs of the entries, in order
]]
${LUA_APPEND}
local ids = cachebus_append_all(KEYS[1], ARGV, 2)
local i = 2 + 4
for n = 1, #ids do
  local nf = tonumber(ARGV[i])
  local fields = {}
  for j = i + 1, i + nf do fields[#fields + 1] = ARGV[j] end
  redis.call('PUBLISH', ARGV[1], cjson.encode({ ids[n], fields }))
  i = i + nf + 1
end
return ids`);
