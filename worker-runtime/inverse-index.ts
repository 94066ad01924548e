/**
 * The inverse side of a key → labels map (tags of an entry, sources of a derived value):
 * label → the keys that carry it. Empty sets are removed, so the index holds only live labels.
 */
export type InverseIndex = Map<string, Set<string>>;

/** Records `key` under each of `labels`. */
export function indexKey(index: InverseIndex, key: string, labels: Iterable<string>): void {
  for (const l of labels) {
    let set = index.get(l);
    if (set === undefined) index.set(l, (set = new Set()));
    set.add(key);
  }
}

/** Removes `key` from each of `labels`, dropping a label whose set becomes empty. */
export function unindexKey(index: InverseIndex, key: string, labels: Iterable<string>): void {
  for (const l of labels) {
    const set = index.get(l);
    if (set !== undefined && set.delete(key) && set.size === 0) index.delete(l);
  }
}
