import { createHmac, timingSafeEqual } from 'node:crypto';
import { BadEntryError, InvalidKeyError } from './errors.js';
import { CHAIN_FIELDS_BYTES } from './lua-append.js';

/**
 * Wire format of one invalidation stream entry (docs/wire-format.md). Plain string fields,
 * so any client can publish with a single XADD:
 *
 *   v  protocol version, "1"                     (required)
 *   o  origin id of the publisher                 (optional; a reader skips its own)
 *   t  publish time, ms since the epoch           (optional; else the entry ID's time)
 *   k  keys, a JSON array of strings              (optional)
 *   g  tags, a JSON array of strings              (optional)
 *   c  "1" to clear every cache of the namespace  (optional)
 *   s  HMAC-SHA256 hex of the canonical string    (required when signing is on)
 *   p  ID of the previous chained entry           (added by the publish script, bus/lua-append.ts)
 *   e  the stream's epoch                         (added by the publish script)
 *
 * At least one of k, g, c must be present.
 */
export const PROTOCOL_VERSION = '1';

export interface Invalidation {
  readonly keys: readonly string[];
  readonly tags: readonly string[];
  readonly clear: boolean;
}

/** `inv` with its absent parts filled in (no keys, no tags, no clear). */
export function completeInvalidation(inv: Partial<Invalidation>): Invalidation {
  return { keys: inv.keys ?? [], tags: inv.tags ?? [], clear: inv.clear ?? false };
}

export interface DecodedEntry extends Invalidation {
  readonly id: string;
  readonly origin: string;
  /** Publish time in ms (the `t` field, or the entry ID's ms part). */
  readonly time: number;
  /** The previous chained entry (`p`), when published through the chain script. */
  readonly prev?: string | undefined;
  /** The stream's epoch (`e`), when published through the chain script. */
  readonly epoch?: string | undefined;
}

export function canonical(v: string, o: string, t: string, k: string, g: string, c: string): string {
  return `${v}\n${o}\n${t}\n${k}\n${g}\n${c}`;
}

export function sign(secret: string | Buffer, text: string): string {
  return createHmac('sha256', secret).update(text).digest('hex');
}

export interface EncodeOptions {
  readonly origin: string;
  readonly time: number;
  readonly secret?: string | Buffer | undefined;
  readonly maxEntryBytes: number;
}

/** UTF-8 bytes of a string; exact, with a fast path for short ASCII-sized strings. */
export function byteSize(s: string): number {
  return s.length < 64 && !/[^\x00-\x7f]/.test(s) ? s.length : Buffer.byteLength(s);
}

/** Printable ASCII that JSON writes as itself (no `"`, no `\\`): one byte per character. */
const kPlain = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;
/** Printable ASCII only (JSON text whose UTF-8 size is its length). */
const kAscii = /^[\x20-\x7e]*$/;

/** Bytes one key or tag takes inside its field's JSON array (its JSON string and a comma). */
export function encodedItemBytes(item: string): number {
  return kPlain.test(item) ? item.length + 3 : byteSize(JSON.stringify(item)) + 1;
}

/**
 * `JSON.stringify(items)` and its UTF-8 size, when every item is written as itself between
 * quotes and in ASCII (so each item costs exactly `length + 3`, as `encodedItemBytes` says);
 * undefined otherwise. One pass over the batch instead of one JSON.stringify per item: on a
 * 1000-key publish, the per-item sizing was most of the publisher's time (issue 11).
 */
function plainJson(items: readonly string[]): { json: string; bytes: number } | undefined {
  if (items.length === 0) return { json: '', bytes: 0 };
  let expected = 1; // "[" and "]", minus the comma the last item does not take
  for (const item of items) {
    if (typeof item !== 'string') return undefined;
    expected += item.length + 3;
  }
  const json = JSON.stringify(items);
  // Any escape makes the text longer than expected; any non-ASCII character fails kAscii.
  return json.length === expected && kAscii.test(json) ? { json, bytes: expected - 1 } : undefined;
}

/** Bytes of an entry as a reader measures it: every field name and value, in UTF-8. */
export function entryBytes(fields: readonly string[]): number {
  let n = 0;
  for (const f of fields) n += byteSize(f);
  return n;
}

/**
 * Encodes one invalidation as one or more XADD field lists. Each entry, as written (JSON
 * escaping included, plus the chain fields the publish script adds), is at most
 * `maxEntryBytes`: a reader never receives an entry it would refuse (invariant I7).
 * A batch too large for one entry is split by keys/tags; `clear` rides in the first entry.
 */
export function encode(inv: Invalidation, opts: EncodeOptions): string[][] {
  const t = String(opts.time);
  // v, o, t, k, g, c, s names and fixed values; "[" "]" twice; the signature; the chain fields.
  const fixed = 7 + 1 + byteSize(opts.origin) + t.length + 1 + 4 + (opts.secret !== undefined ? 64 : 0) + CHAIN_FIELDS_BYTES;
  const budget = opts.maxEntryBytes - fixed;
  // The common case: plain keys and tags that fit in one entry, sized and encoded in one pass.
  const pk = plainJson(inv.keys);
  const pg = pk === undefined ? undefined : plainJson(inv.tags);
  if (pk !== undefined && pg !== undefined && pk.bytes + pg.bytes <= budget) {
    return [fieldsOf(opts, t, pk.json, pg.json, inv.clear ? '1' : '')];
  }
  const chunks: { keys: string[]; tags: string[] }[] = [];
  let cur = { keys: [] as string[], tags: [] as string[] };
  let size = 0;
  const push = (list: 'keys' | 'tags', item: string): void => {
    const cost = encodedItemBytes(item);
    if (cost > budget) {
      throw new InvalidKeyError(`a ${list === 'keys' ? 'key' : 'tag'} is ${cost} bytes as encoded on the wire, above what options.maxEntryBytes (${opts.maxEntryBytes}) leaves for it`);
    }
    if (size + cost > budget && (cur.keys.length > 0 || cur.tags.length > 0)) {
      chunks.push(cur);
      cur = { keys: [], tags: [] };
      size = 0;
    }
    cur[list].push(item);
    size += cost;
  };
  for (const k of inv.keys) push('keys', k);
  for (const g of inv.tags) push('tags', g);
  chunks.push(cur);
  return chunks.map((ch, i) => fieldsOf(
    opts, t,
    ch.keys.length > 0 ? JSON.stringify(ch.keys) : '',
    ch.tags.length > 0 ? JSON.stringify(ch.tags) : '',
    inv.clear && i === 0 ? '1' : '',
  ));
}

/** The XADD field list of one entry ('' for an absent k, g or c). */
function fieldsOf(opts: EncodeOptions, t: string, k: string, g: string, c: string): string[] {
  const fields = ['v', PROTOCOL_VERSION, 'o', opts.origin, 't', t];
  if (k) fields.push('k', k);
  if (g) fields.push('g', g);
  if (c) fields.push('c', c);
  if (opts.secret !== undefined) {
    fields.push('s', sign(opts.secret, canonical(PROTOCOL_VERSION, opts.origin, t, k, g, c)));
  }
  return fields;
}

export interface DecodeOptions {
  readonly secret?: string | Buffer | undefined;
  readonly maxEntryBytes: number;
}

function stringArray(raw: string, field: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new BadEntryError('malformed', `field ${field} is not JSON`);
  }
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) {
    throw new BadEntryError('malformed', `field ${field} is not a JSON array of strings`);
  }
  return parsed as string[];
}

/** Decodes one XREAD entry; throws BadEntryError (never anything else) when it is unusable. */
export function decode(id: string, fields: unknown, opts: DecodeOptions): DecodedEntry {
  if (!Array.isArray(fields) || fields.length % 2 !== 0) {
    throw new BadEntryError('malformed', 'entry fields are not name/value pairs');
  }
  let bytes = 0;
  let v: string | undefined, o = '', t = '', k = '', g = '', c = '', s: string | undefined;
  let p: string | undefined, e: string | undefined;
  for (let i = 0; i < fields.length; i += 2) {
    const name: unknown = fields[i];
    const value: unknown = fields[i + 1];
    if (typeof name !== 'string' || typeof value !== 'string') {
      throw new BadEntryError('malformed', 'entry field is not a string');
    }
    bytes += name.length + value.length;
    switch (name) {
      case 'v': v = value; break;
      case 'o': o = value; break;
      case 't': t = value; break;
      case 'k': k = value; break;
      case 'g': g = value; break;
      case 'c': c = value; break;
      case 's': s = value; break;
      case 'p': p = value; break;
      case 'e': e = value; break;
      default: break; // unknown fields are ignored, for forward compatibility
    }
  }
  // UTF-8 is at most 3 bytes per UTF-16 unit: count exactly only when it could matter.
  if (bytes * 3 > opts.maxEntryBytes) bytes = entryBytes(fields as string[]);
  if (bytes > opts.maxEntryBytes) {
    throw new BadEntryError('oversized', `entry is ${bytes} bytes, above maxEntryBytes ${opts.maxEntryBytes}`);
  }
  if (v === undefined) throw new BadEntryError('malformed', 'entry has no protocol version field v');
  if (v !== PROTOCOL_VERSION) {
    throw new BadEntryError('version', `unknown protocol version ${JSON.stringify(v)}`);
  }
  if (opts.secret !== undefined) {
    const want = sign(opts.secret, canonical(v, o, t, k, g, c));
    if (s === undefined || s.length !== want.length || !timingSafeEqual(Buffer.from(s), Buffer.from(want))) {
      throw new BadEntryError('signature', s === undefined ? 'entry is not signed' : 'entry signature does not match');
    }
  }
  const keys = k ? stringArray(k, 'k') : [];
  const tags = g ? stringArray(g, 'g') : [];
  const clear = c === '1';
  if (c !== '' && c !== '1' && c !== '0') throw new BadEntryError('malformed', 'field c must be "1" or "0"');
  if (keys.length === 0 && tags.length === 0 && !clear) {
    throw new BadEntryError('malformed', 'entry has no keys, tags or clear flag');
  }
  let time = t ? Number(t) : NaN;
  if (!Number.isFinite(time)) time = Number(id.slice(0, id.indexOf('-')));
  return { id, origin: o, time, keys, tags, clear, prev: p, epoch: e };
}

/**
 * Throws InvalidKeyError unless `key` is a non-empty string of at most `maxBytes` UTF-8 bytes
 * as encoded on the wire (a JSON string: quotes, backslashes and control characters escaped).
 */
export function assertKey(key: string, maxBytes: number, what = 'key'): void {
  if (typeof key !== 'string' || key.length === 0) {
    throw new InvalidKeyError(`${what} must be a non-empty string (got ${typeof key === 'string' ? '""' : typeof key})`);
  }
  if (key.length + 2 > maxBytes / 6) {
    const bytes = encodedItemBytes(key) - 1;
    if (bytes > maxBytes) {
      throw new InvalidKeyError(`${what} is ${bytes} bytes as encoded on the wire (JSON), above options.maxKeyBytes (${maxBytes})`);
    }
  }
}
