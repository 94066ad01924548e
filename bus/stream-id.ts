/** Redis stream IDs, `<ms>-<seq>`, compared numerically. */
export interface StreamId {
  readonly ms: number;
  readonly seq: number;
}

export const ZERO_ID = '0-0';

export function parseStreamId(id: string): StreamId {
  const dash = id.indexOf('-');
  if (dash < 0) return { ms: Number(id), seq: 0 };
  return { ms: Number(id.slice(0, dash)), seq: Number(id.slice(dash + 1)) };
}

/** Negative when a < b, 0 when equal, positive when a > b. */
export function compareStreamIds(a: string, b: string): number {
  if (a === b) return 0;
  const x = parseStreamId(a);
  const y = parseStreamId(b);
  return x.ms !== y.ms ? x.ms - y.ms : x.seq - y.seq;
}
