/**
 * The counting rules of a proving read (bus/stream-position.ts), one case per rule, with the
 * case just on the safe side of it: each would pass silently if its rule were dropped or its
 * comparison turned around.
 */
import { describe, expect, it } from 'vitest';
import { checkPosition, peekFields, type Position, type StreamInfo } from '../bus/stream-position.js';

const at: Position = { cursor: '100-0', counted: 10, epoch: 'E', head: '100-0' };
const same: StreamInfo = { length: 10, lastId: '100-0', maxDeletedId: '0-0', entriesAdded: 10, epoch: 'E', head: '100-0' };
const gap = (pos: Position, info: StreamInfo | undefined) => checkPosition(pos, info)?.gap;

describe('checkPosition', () => {
  it('the stream as the reader left it: nothing to report', () => {
    expect(checkPosition(at, same)).toBeUndefined();
  });

  it('newer entries not read yet are not a gap', () => {
    expect(checkPosition(at, { ...same, length: 12, lastId: '102-0', entriesAdded: 12, head: '102-0' })).toBeUndefined();
  });

  it('missing: the stream is gone after the reader had a position; not before', () => {
    expect(gap(at, undefined)).toBe('missing');
    expect(checkPosition({ cursor: '0-0', counted: 0, epoch: undefined, head: '0-0' }, undefined)).toBeUndefined();
  });

  it('reset: another epoch (the stream was re-created)', () => {
    expect(gap(at, { ...same, epoch: 'F' })).toBe('reset');
    expect(gap(at, { ...same, epoch: undefined })).toBe('reset');
  });

  it('reset: fewer entries ever added than the reader counted', () => {
    expect(gap(at, { ...same, entriesAdded: 9, length: 9 })).toBe('reset');
  });

  it('trimmed: more entries deleted than there were up to the cursor', () => {
    expect(gap(at, { ...same, length: 1, lastId: '102-0', entriesAdded: 12, head: '102-0' })).toBe('trimmed'); // 11 deleted > 10
    expect(checkPosition(at, { ...same, length: 2, lastId: '102-0', entriesAdded: 12, head: '102-0' })).toBeUndefined(); // 10 deleted: those up to the cursor
  });

  it('trimmed: max-deleted-entry-id past the cursor; at the cursor it is not', () => {
    expect(gap(at, { ...same, length: 11, lastId: '102-0', entriesAdded: 12, maxDeletedId: '101-0', head: '102-0' })).toBe('trimmed');
    expect(checkPosition(at, { ...same, length: 9, maxDeletedId: '100-0' })).toBeUndefined();
  });

  it('reset: the stream end behind the cursor', () => {
    expect(gap(at, { ...same, lastId: '99-0' })).toBe('reset');
  });

  it('reset: at the end, entries-added must equal the count', () => {
    expect(gap(at, { ...same, entriesAdded: 11, length: 11 })).toBe('reset');
  });

  it('trimmed: a chained entry at or before the cursor that the reader never applied', () => {
    expect(gap({ ...at, head: '90-0' }, same)).toBe('trimmed');
    expect(checkPosition({ ...at, head: '90-0' }, { ...same, head: '90-0' })).toBeUndefined();
  });

  it('after a per-entry gap (count unknown), reaching the end makes counting exact again', () => {
    expect(checkPosition({ ...at, counted: undefined }, same)).toEqual({ counted: 10 });
    expect(checkPosition({ ...at, counted: undefined }, { ...same, lastId: '102-0', entriesAdded: 12, length: 12, head: '102-0' })).toBeUndefined();
  });
});

describe('peekFields', () => {
  it('reads origin and the chain fields; a chain needs both p and e', () => {
    expect(peekFields(['v', '1', 'o', 'a', 'p', '1-0', 'e', 'E'])).toEqual({ o: 'a', p: '1-0', e: 'E' });
    expect(peekFields(['o', 'a', 'p', '1-0'])).toEqual({ o: 'a', p: undefined, e: undefined });
    expect(peekFields('junk')).toEqual({ o: undefined, p: undefined, e: undefined });
  });
});
