import { createHmac, timingSafeEqual } from 'node:crypto';
import { BadEntryError, InvalidKeyError } from './errors.js';

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
 *
 * At least one of k, g, c must be present.
 */
export const PROTOCOL_VERSION = '1';

export interface Invalidation {
  readonly keys: readonly string[];
  readonly tags: readonly string[];
  readonly clear: boolean;
}

export interface DecodedEntry extends Invalidation {
  readonly id: string;
  readonly origin: string;
  /** Publish time in ms (the `t` field, or the entry ID's ms part). */
  readonly time: number;
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

/**
 * Encodes one invalidation as one or more XADD field lists, each below `maxEntryBytes`.
 * A batch too large for one entry is split by keys/tags; `clear` rides in the first entry.
 */
export function encode(inv: Invalidation, opts: EncodeOptions): string[][] {
  const budget = opts.maxEntryBytes - 256 - opts.origin.length;
  const chunks: { keys: string[]; tags: string[] }[] = [];
  let cur = { keys: [] as string[], tags: [] as string[] };
  let size = 0;
  const push = (list: 'keys' | 'tags', item: string): void => {
    const cost = Buffer.byteLength(item) + 3;
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
  const t = String(opts.time);
  return chunks.map((ch, i) => {
    const k = ch.keys.length > 0 ? JSON.stringify(ch.keys) : '';
    const g = ch.tags.length > 0 ? JSON.stringify(ch.tags) : '';
    const c = inv.clear && i === 0 ? '1' : '';
    const fields = ['v', PROTOCOL_VERSION, 'o', opts.origin, 't', t];
    if (k) fields.push('k', k);
    if (g) fields.push('g', g);
    if (c) fields.push('c', c);
    if (opts.secret !== undefined) {
      fields.push('s', sign(opts.secret, canonical(PROTOCOL_VERSION, opts.origin, t, k, g, c)));
    }
    return fields;
  });
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
      default: break; // unknown fields are ignored, for forward compatibility
    }
  }
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
  return { id, origin: o, time, keys, tags, clear };
}

/** Throws InvalidKeyError unless `key` is a non-empty string of at most `maxBytes` UTF-8 bytes. */
export function assertKey(key: string, maxBytes: number, what = 'key'): void {
  if (typeof key !== 'string' || key.length === 0) {
    throw new InvalidKeyError(`${what} must be a non-empty string (got ${typeof key === 'string' ? '""' : typeof key})`);
  }
  if (key.length * 3 > maxBytes && Buffer.byteLength(key) > maxBytes) {
    throw new InvalidKeyError(`${what} is ${Buffer.byteLength(key)} bytes, above options.maxKeyBytes (${maxBytes})`);
  }
}
