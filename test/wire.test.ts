import { describe, expect, it } from 'vitest';
import { decode, encode, encodedItemBytes, PROTOCOL_VERSION } from '../bus/wire.js';
import { CHAIN_FIELDS_BYTES, newEpoch } from '../bus/lua-append.js';
import { BadEntryError } from '../bus/errors.js';
import { compareStreamIds } from '../bus/stream-id.js';
import { busKeys } from '../bus/keys.js';
import { decodeHint, encodeHint, kMaxDatagramBytes } from '../bus/host-hint.js';

const fieldsOf = (o: Record<string, string>): string[] => Object.entries(o).flat();
const opts = { maxEntryBytes: 65_536 };

describe('wire format', () => {
  it('round-trips keys, tags and clear, signed', () => {
    const [fields] = encode({ keys: ['a', 'b'], tags: ['t'], clear: true }, { origin: 'o1', time: 123, secret: 's3', maxEntryBytes: 65_536 });
    const e = decode('5-0', fields, { ...opts, secret: 's3' });
    expect(e).toMatchObject({ keys: ['a', 'b'], tags: ['t'], clear: true, origin: 'o1', time: 123, id: '5-0' });
  });

  it('accepts the minimal entry a redis-cli user would write', () => {
    const e = decode('1700000000000-0', ['v', '1', 'k', '["product:42"]'], opts);
    expect(e.keys).toEqual(['product:42']);
    expect(e.time).toBe(1700000000000); // falls back to the entry ID's time
    expect(e.origin).toBe('');
  });

  it('splits a batch larger than maxEntryBytes into several entries, each within the bound', () => {
    const keys = Array.from({ length: 2000 }, (_, i) => `product:${i}:${'x'.repeat(20)}`);
    const entries = encode({ keys, tags: [], clear: false }, { origin: 'o', time: 1, maxEntryBytes: 8192 });
    expect(entries.length).toBeGreaterThan(1);
    const back = entries.flatMap((f, i) => {
      const bytes = f.reduce((n, s) => n + s.length, 0);
      expect(bytes).toBeLessThanOrEqual(8192);
      return decode(`${i + 1}-0`, f, { maxEntryBytes: 8192 }).keys;
    });
    expect(back).toEqual(keys);
  });

  it.each([
    ['plain ASCII', (i: number) => `product:${i}`],
    ['quotes and backslashes', (i: number) => `a"b\\c:${i}`],
    ['control characters and DEL', (i: number) => `t\u0001\n\u007f:${i}`],
    ['two-byte UTF-8', (i: number) => `é${'ü'.repeat(30)}:${i}`],
    ['astral and lone surrogates', (i: number) => `😀\ud800:${i}`],
  ])('sizes %s keys exactly as written: every entry within the bound with its chain fields, none needlessly split', (_name, key) => {
    const max = 4096;
    const bytes = (f: string[]): number => f.reduce((n, s) => n + Buffer.byteLength(s), 0) + CHAIN_FIELDS_BYTES;
    for (let n = 1; n <= 400; n += n < 100 ? 1 : 50) { // every size up to and across the one-entry limit
      const keys = Array.from({ length: n }, (_, i) => key(i));
      const entries = encode({ keys, tags: ['t"ag', 'tag'], clear: false }, { origin: 'o', time: 1, maxEntryBytes: max });
      for (const f of entries) expect(bytes(f)).toBeLessThanOrEqual(max);
      expect(entries.flatMap((f, i) => decode(`${i + 1}-0`, f, { maxEntryBytes: max }).keys)).toEqual(keys);
      // Exact sizing: each item costs its JSON's UTF-8 bytes and a comma, and an entry is split
      // only when the next key would not have fit (the estimate of the fixed fields is within 16 bytes).
      for (const k of [...keys, 't"ag']) expect(encodedItemBytes(k)).toBe(Buffer.byteLength(JSON.stringify(k)) + 1);
      if (entries.length > 1) {
        const first = decode('1-0', entries[0]!, { maxEntryBytes: max }).keys.length;
        expect(bytes(entries[0]!) + encodedItemBytes(keys[first]!)).toBeGreaterThan(max - 16);
      }
    }
  });

  it('epoch candidates never repeat in a process (a stream re-created by the same publisher gets a new epoch) and fit the bytes reserved for them', () => {
    const seen = new Set<string>();
    let longest = 0;
    for (let i = 0; i < 20_000; i++) {
      const e = newEpoch();
      longest = Math.max(longest, e.length);
      seen.add(e);
    }
    expect(seen.size).toBe(20_000);
    expect(longest).toBeLessThanOrEqual(40 - 11); // 40 reserved (CHAIN_FIELDS_BYTES); a counter never needs more than 11 base-36 digits
  });

  it.each([
    ['no fields', [], 'malformed'],
    ['odd field list', ['v'], 'malformed'],
    ['unknown version', ['v', '99', 'k', '["a"]'], 'version'],
    ['missing version', ['k', '["a"]'], 'malformed'],
    ['keys not JSON', ['v', '1', 'k', 'product:1'], 'malformed'],
    ['keys not strings', ['v', '1', 'k', '[1,2]'], 'malformed'],
    ['nothing to do', ['v', '1', 'o', 'x'], 'malformed'],
    ['oversized', ['v', '1', 'k', JSON.stringify(['x'.repeat(70_000)])], 'oversized'],
  ])('rejects %s as %s', (_name, fields, reason) => {
    expect(() => decode('1-0', fields, opts)).toThrowError(BadEntryError);
    try {
      decode('1-0', fields, opts);
    } catch (err) {
      expect((err as BadEntryError).reason).toBe(reason);
    }
  });

  it('rejects unsigned and badly signed entries when signing is on', () => {
    const [good] = encode({ keys: ['a'], tags: [], clear: false }, { origin: 'o', time: 1, secret: 'k1', maxEntryBytes: 65_536 });
    expect(() => decode('1-0', fieldsOf({ v: PROTOCOL_VERSION, k: '["a"]' }), { ...opts, secret: 'k1' })).toThrow(/not signed/);
    expect(() => decode('1-0', good!, { ...opts, secret: 'other' })).toThrow(/does not match/);
    const tampered = good!.map((f) => (f === '["a"]' ? '["b"]' : f));
    expect(() => decode('1-0', tampered, { ...opts, secret: 'k1' })).toThrow(/does not match/);
  });
});

describe("same-host datagrams (wake: 'host')", () => {
  const tag = 'cachebus:{shop}:wake';
  it('round-trip keys (any characters), tags and clear, signed or not; a signed one is taken without a secret', () => {
    const inv = { keys: ['a', 'ü "q" \\ \n', '🙂'], tags: ['t'], clear: true };
    for (const secret of [undefined, 's3']) {
      const msg = encodeHint(inv, tag, 'host:1:0:ab', secret);
      expect(decodeHint(msg, tag, secret)).toMatchObject({ ...inv, origin: 'host:1:0:ab' });
      expect(decodeHint(msg, tag, undefined).keys).toEqual(inv.keys);
    }
  });

  it('refuses what is not a hint of this namespace, unsigned or wrongly signed with a secret, empty or oversized', () => {
    const ok = encodeHint({ keys: ['a'], tags: [], clear: false }, tag, 'o', undefined);
    const bad = [
      Buffer.from('[]'),
      Buffer.from('not json'),
      encodeHint({ keys: ['a'], tags: [], clear: false }, 'cachebus:{other}:wake', 'o', undefined),
      Buffer.from(ok.toString().replace('"h1"', '"h2"')),
      Buffer.from(JSON.stringify(['h1', tag, 'o', [1], [], 0])),
      Buffer.from(JSON.stringify(['h1', tag, 'o', ['a'], [], 2])),
      encodeHint({ keys: [], tags: [], clear: false }, tag, 'o', undefined),
      encodeHint({ keys: ['x'.repeat(kMaxDatagramBytes + 64)], tags: [], clear: false }, tag, 'o', undefined),
    ];
    for (const msg of bad) expect(() => decodeHint(msg, tag, undefined)).toThrow();
    expect(() => decodeHint(ok, tag, 's3')).toThrow(/unsigned/);
    const signed = encodeHint({ keys: ['a'], tags: [], clear: false }, tag, 'o', 'other');
    expect(() => decodeHint(signed, tag, 's3')).toThrow(/wrongly signed/);
    const tampered = Buffer.from(encodeHint({ keys: ['a'], tags: [], clear: false }, tag, 'o', 's3').toString().replace('"a"', '"b"'));
    expect(() => decodeHint(tampered, tag, 's3')).toThrow(/wrongly signed/);
  });
});

describe('stream ids and key names', () => {
  it('compares ids numerically, not as strings', () => {
    expect(compareStreamIds('9-0', '10-0')).toBeLessThan(0);
    expect(compareStreamIds('10-2', '10-10')).toBeLessThan(0);
    expect(compareStreamIds('10-10', '10-10')).toBe(0);
  });

  it('puts the namespace in a hash tag and rejects bad names', () => {
    expect(busKeys('cachebus', 'shop').stream).toBe('cachebus:{shop}:inval');
    expect(() => busKeys('cachebus', 'a{b}')).toThrow(/namespace/);
    expect(() => busKeys('', 'shop')).toThrow(/prefix/);
  });
});
