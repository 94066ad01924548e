import { randomBytes } from 'node:crypto';
import { Script } from './script.js';

/**
 * The continuity chain of the invalidation stream (invariant I2, docs/wire-format.md).
 *
 * Every entry appended through these scripts carries two extra fields:
 *   p  the ID of the previous chained entry of the stream ("0-0" for the first one)
 *   e  the stream's epoch
 * A reader applies a chained entry only when `p` is the last chained entry it applied and `e`
 * is the epoch it knows; otherwise it clears first. So a trim, an XDEL, a re-created stream or
 * a failover that lost entries is detected *before* the entry after the hole is applied.
 *
 * The epoch and the chain head live on the stream itself, as a consumer group named
 * `cachebus-epoch:<epoch>` whose last-delivered-id is the last chained entry. The group is
 * never read from (readers use plain XREAD); it is only a marker that dies with the stream:
 * `DEL`, `FLUSHALL` or a restart without persistence removes it, and the next publish creates
 * a new epoch that no re-created stream can reproduce. A stream restored from RDB/AOF or
 * replicated keeps its group, so continuity holds across those.
 */
export const EPOCH_GROUP_PREFIX = 'cachebus-epoch:';

/**
 * Lua fragment for scripts that append invalidation entries. Defines:
 *   cachebus_chain(stream, candidate) -> epoch, group, head
 *   cachebus_append_all(stream, argv, from) -> ids, next
 * `argv` from index `from`: trimKind ('' | 'MAXLEN' | 'MINID'), trimArg, epochCandidate,
 * nEntries, then per entry: nFields (names and values counted), name, value, ...
 * Build that list with `appendArgs`.
 */
export const LUA_APPEND = String.raw`
local function cachebus_chain(stream, candidate)
  if redis.call('EXISTS', stream) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local name, last
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
      end
      if name and string.sub(name, 1, ${EPOCH_GROUP_PREFIX.length}) == '${EPOCH_GROUP_PREFIX}' then
        return string.sub(name, ${EPOCH_GROUP_PREFIX.length + 1}), name, last
      end
    end
  end
  local name = '${EPOCH_GROUP_PREFIX}' .. candidate
  redis.call('XGROUP', 'CREATE', stream, name, '0', 'MKSTREAM')
  return candidate, name, '0-0'
end

local function cachebus_append_all(stream, argv, from)
  local trimKind, trimArg, candidate = argv[from], argv[from + 1], argv[from + 2]
  local n = tonumber(argv[from + 3])
  local i = from + 4
  local epoch, group, prev = cachebus_chain(stream, candidate)
  local ids = {}
  for _ = 1, n do
    local nf = tonumber(argv[i])
    local cmd = { 'XADD', stream }
    if trimKind ~= '' then cmd[#cmd + 1] = trimKind; cmd[#cmd + 1] = '~'; cmd[#cmd + 1] = trimArg end
    cmd[#cmd + 1] = '*'
    for j = i + 1, i + nf do cmd[#cmd + 1] = argv[j] end
    cmd[#cmd + 1] = 'p'; cmd[#cmd + 1] = prev
    cmd[#cmd + 1] = 'e'; cmd[#cmd + 1] = epoch
    prev = redis.call(unpack(cmd))
    ids[#ids + 1] = prev
    i = i + nf + 1
  end
  if n > 0 then redis.call('XGROUP', 'SETID', stream, group, prev) end
  return ids, i
end
`;

/**
 * An invalidation encoded for a script that appends it itself (`Bus.appendArgsFor`): the
 * `appendArgs` tail, and `hint()` to call once the script ran (the wake-up hints of option `wake`).
 */
export interface Appended {
  readonly args: string[];
  hint(): void;
}

/** Stream retention applied by each XADD. */
export type Trim = { readonly kind: '' } | { readonly kind: 'MAXLEN' | 'MINID'; readonly arg: string | number };

/** Characters the script adds to each entry (p, e and their values), reserved by `encode`. */
export const CHAIN_FIELDS_BYTES = 2 + 41 + 2 + 40;

/** 12 random bytes drawn once per process: the part of every epoch candidate no other process shares. */
const kEpochSeed = randomBytes(12).toString('hex');
let epochCount = 0;

/**
 * A fresh epoch candidate: used only if the stream has no epoch yet. Every call returns a
 * different one (this process's random seed and a counter), so a stream re-created later never
 * gets the epoch of an earlier one, without a `randomBytes` call on each publish (it cost
 * 40-130 µs of the publisher's critical path, measured in issue 11's throughput work).
 */
export function newEpoch(): string {
  return `${kEpochSeed}${(epochCount++).toString(36)}`;
}

/** The ARGV tail `cachebus_append_all` reads: retention, epoch candidate, the entries. */
export function appendArgs(entries: readonly (readonly string[])[], trim: Trim, epochCandidate = newEpoch()): string[] {
  const out: string[] = [trim.kind, trim.kind === '' ? '' : String(trim.arg), epochCandidate, String(entries.length)];
  for (const fields of entries) {
    out.push(String(fields.length));
    for (const f of fields) out.push(f);
  }
  return out;
}

/** Appends entries (field lists from `encode`) to the stream, chained. Returns their IDs. */
export const publishScript = new Script('publish', 1, String.raw`--[[
  publish: appends invalidation entries to the stream, each naming its predecessor and the
  stream's epoch (bus/lua-append.ts).
  Input:
    KEYS[1] the invalidation stream
    ARGV    appendArgs(...)
  Output:
    the IDs of the entries, in order
]]
${LUA_APPEND}
local ids = cachebus_append_all(KEYS[1], ARGV, 1)
return ids`);
