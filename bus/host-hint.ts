/**
 * The datagram of option `wake: 'host'` (docs/wire-format.md, "Hints beside the stream"): what
 * bus/host-wake.ts sends to same-host peers, and checks before it drops a key.
 */
import { timingSafeEqual } from 'node:crypto';
import { ZERO_ID } from './stream-id.js';
import { sign, type DecodedEntry, type Invalidation } from './wire.js';

/** The largest datagram sent or taken; an invalidation whose datagram would be larger comes with the stream only. */
export const kMaxDatagramBytes = 60_000;
/** The datagram format's version (docs/wire-format.md, "Hints beside the stream"). */
const kHintVersion = 'h1';
/** Hex characters of an HMAC-SHA256 signature. */
export const kSigChars = 64;

/**
 * One invalidation as a datagram (docs/wire-format.md): the JSON text
 * `["h1", tag, origin, keys, tags, clear]`, preceded, when a secret is set, by the 64 hex
 * characters of its HMAC-SHA256. Not an entry's fields: a hint goes out as the call is made,
 * before the entry is encoded, and the receiver parses one JSON text (issue 15: each step before
 * the first `sendmsg` costs several times more in a process that was idle).
 */
export function encodeHint(inv: Invalidation, tag: string, origin: string, secret: string | Buffer | undefined): Buffer {
  const body = JSON.stringify([kHintVersion, tag, origin, inv.keys, inv.tags, inv.clear ? 1 : 0]);
  return Buffer.from(secret === undefined ? body : sign(secret, body) + body);
}

function allStrings(list: unknown[]): boolean {
  for (let i = 0; i < list.length; i++) if (typeof list[i] !== 'string') return false;
  return true;
}

/**
 * Decodes a datagram of `encodeHint`; throws when it is not a valid hint of namespace `tag`
 * (malformed, another version or namespace, unsigned or wrongly signed when `secret` is set).
 * A signed datagram is taken without a secret, as a signed entry is. Plain loops and one
 * `JSON.parse`: this runs in a process the datagram just woke.
 */
export function decodeHint(msg: Buffer, tag: string, secret: string | Buffer | undefined): DecodedEntry {
  if (msg.length > kMaxDatagramBytes + kSigChars) throw new Error('oversized');
  const signed = msg[0] !== 0x5b; // '[': the body, unsigned
  const body = msg.toString('utf8', signed ? kSigChars : 0);
  if (secret !== undefined) {
    if (!signed || msg.length < kSigChars) throw new Error('unsigned');
    if (!timingSafeEqual(msg.subarray(0, kSigChars), Buffer.from(sign(secret, body)))) throw new Error('wrongly signed');
  }
  const m: unknown = JSON.parse(body);
  if (!Array.isArray(m) || m.length !== 6 || m[0] !== kHintVersion || m[1] !== tag) throw new Error('not a hint of this namespace');
  const origin: unknown = m[2], keys: unknown = m[3], tags: unknown = m[4], clear: unknown = m[5];
  if (typeof origin !== 'string' || !Array.isArray(keys) || !Array.isArray(tags) || !allStrings(keys) || !allStrings(tags) || (clear !== 0 && clear !== 1)) {
    throw new Error('malformed');
  }
  if (keys.length === 0 && tags.length === 0 && clear === 0) throw new Error('empty');
  return { id: ZERO_ID, origin, time: 0, keys: keys as string[], tags: tags as string[], clear: clear === 1 }; // a datagram names no stream ID
}
