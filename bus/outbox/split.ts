/** An invalidation as the relay publishes it. */
export interface RelayedInvalidation {
  keys: string[];
  tags: string[];
  clear: boolean;
}

/** Bytes of `s` once written into an entry field: its JSON encoding (quotes, `\\`, `\u00XX`...). */
export const encodedBytes = (s: string): number => Buffer.byteLength(JSON.stringify(s));

/**
 * Splits an invalidation into parts whose keys and tags, **as JSON-encoded in the entry**,
 * fit in `budget` bytes each: a key full of `"` or `\` takes up to twice (a control character
 * six times) its raw length, and an entry sized by raw length is refused by every reader as
 * oversized. A single key or tag that cannot fit alone is replaced by a clear of the namespace
 * (over-invalidating is safe; dropping is not); `oversized` counts them.
 */
export function splitByEncodedSize(inv: RelayedInvalidation, budget: number): { parts: RelayedInvalidation[]; oversized: number } {
  const parts: RelayedInvalidation[] = [];
  let cur: RelayedInvalidation = { keys: [], tags: [], clear: inv.clear };
  let size = 0;
  let oversized = 0;
  let clear = inv.clear;
  const add = (list: 'keys' | 'tags', item: string): void => {
    const cost = encodedBytes(item) + 1; // the item and its comma
    const open = cur[list].length === 0 ? 2 : 0; // [ and ] of a list that starts here
    if (cost + 2 > budget) {
      oversized++;
      clear = true;
      return;
    }
    if (size + open + cost > budget && (cur.keys.length > 0 || cur.tags.length > 0)) {
      parts.push(cur);
      cur = { keys: [], tags: [], clear: false };
      size = 0;
      add(list, item);
      return;
    }
    cur[list].push(item);
    size += open + cost;
  };
  for (const k of inv.keys) add('keys', k);
  for (const g of inv.tags) add('tags', g);
  parts.push(cur);
  if (clear) parts[0]!.clear = true;
  return { parts: parts.filter((p) => p.keys.length > 0 || p.tags.length > 0 || p.clear), oversized };
}
