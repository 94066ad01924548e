import { InvalidOptionError } from '../bus/errors.js';
import { indexKey, unindexKey, type InverseIndex } from './inverse-index.js';

/**
 * A rule of the static dependency graph: the keys matching `target` are derived from the keys
 * matching `on`. Patterns are keys with `{name}` placeholders, each matching one or more
 * characters other than `:` (e.g. `order:{id}:total`).
 */
/** The placeholders of a key pattern: `'company:{c}:name'` gives `'c'`. */
export type PlaceholdersOf<P extends string> = P extends `${string}{${infer V}}${infer Rest}` ? V | PlaceholdersOf<Rest> : never;
/** The placeholders every pattern of `On` has (what `via` is sure to get, whichever pattern matched). */
type CommonPlaceholders<On extends string> =
  (On extends string ? (x: PlaceholdersOf<On>) => void : never) extends (x: infer I) => void ? I & string : never;
/** What `via` receives: the placeholders of `on` by name (any name when `on` is not a literal). */
export type PlaceholderVars<On extends string> =
  string extends On ? Readonly<Record<string, string>> : Readonly<Record<CommonPlaceholders<On>, string>>;

export interface DependencyRule<On extends string = string> {
  /** Pattern(s) of the keys the target is derived from. */
  readonly on: On | readonly On[];
  /**
   * Maps the placeholders captured from a changed source key to the dependent keys, for
   * dependents that sit on another record (a partner's `company_name` depends on the `name` of
   * its company). Synchronous: it runs inside every invalidation. Without it, every placeholder
   * of `target` must appear in each `on` pattern and the dependent key is `target` filled in.
   * @defaultValue none (fill `target` with the source's placeholders)
   */
  readonly via?: (vars: PlaceholderVars<On>, sourceKey: string) => Iterable<string>;
}

interface Pattern {
  readonly text: string;
  readonly re: RegExp;
  readonly vars: readonly string[];
  /** Literal text before the first placeholder: a cheap pre-filter. */
  readonly head: string;
}

interface CompiledRule {
  readonly target: Pattern;
  readonly on: Pattern;
  readonly via: DependencyRule['via'];
}

const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

function compile(text: string, option: string): Pattern {
  if (typeof text !== 'string' || text.length === 0) throw new InvalidOptionError(`${option} must be a non-empty key pattern`);
  const vars: string[] = [];
  let re = '^';
  let last = 0;
  for (const m of text.matchAll(PLACEHOLDER)) {
    const name = m[1]!;
    if (vars.includes(name)) throw new InvalidOptionError(`${option} ${JSON.stringify(text)} repeats placeholder {${name}}`);
    vars.push(name);
    re += escape(text.slice(last, m.index)) + '([^:]+)';
    last = m.index + m[0].length;
  }
  re += escape(text.slice(last)) + '$';
  const first = text.indexOf('{');
  return { text, re: new RegExp(re), vars, head: first < 0 ? text : text.slice(0, first) };
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function fill(p: Pattern, vars: Readonly<Record<string, string>>): string {
  return p.text.replace(PLACEHOLDER, (_, name: string) => vars[name]!);
}

/**
 * What each cached key is derived from, and so what to drop with it. Two kinds of edges:
 * - per entry, given with `dependsOn` when a value is cached (and while it loads); they live as
 *   long as the entry;
 * - static rules declared once with `declare`, matched by key pattern.
 *
 * Expansion happens in every process that applies an invalidation (each reader), not at the
 * publisher: the stream carries only the changed keys (docs/dependencies.md has the numbers).
 */
export class DependencyGraph {
  /** key -> the keys it was derived from (per-entry edges). */
  readonly #sources = new Map<string, readonly string[]>();
  /** source key -> the keys derived from it. */
  readonly #dependents: InverseIndex = new Map();
  readonly #rules: CompiledRule[] = [];
  /** Calls of a rule's `via` that threw (the rule is skipped for that key; the rest still drops). */
  ruleErrors = 0;
  /** Told about each `via` that threw (the cache forwards it to its `error` event). */
  onRuleError: ((err: unknown) => void) | undefined;

  /** true when there is anything to expand (the cache skips the graph otherwise). */
  get active(): boolean {
    return this.#sources.size > 0 || this.#rules.length > 0;
  }

  /** Number of keys with per-entry edges. */
  get size(): number {
    return this.#sources.size;
  }

  /**
   * Declares that keys matching `target` are derived from keys matching `rule.on`. Declare the
   * same rules in every process of the namespace (each reader expands with its own graph).
   *
   * @example
   * cache.dependencies.declare('order:{id}:total', { on: ['order:{id}:discount', 'order:{id}:lines'] });
   * cache.dependencies.declare('partner:{p}:company_name', {
   *   on: 'company:{c}:name',
   *   via: ({ c }) => partnersOf(c).map((p) => `partner:${p}:company_name`),
   * });
   */
  declare<On extends string>(target: string, rule: DependencyRule<On>): this {
    const t = compile(target, 'dependencies.declare target');
    const ons = typeof rule?.on === 'string' ? [rule.on] : rule?.on;
    if (!Array.isArray(ons) || ons.length === 0) throw new InvalidOptionError('dependencies.declare: rule.on must name at least one key pattern');
    if (rule.via !== undefined && typeof rule.via !== 'function') throw new InvalidOptionError('dependencies.declare: rule.via must be a function');
    for (const text of ons as readonly string[]) {
      const on = compile(text, 'dependencies.declare rule.on');
      if (rule.via === undefined) {
        const missing = t.vars.filter((v) => !on.vars.includes(v));
        if (missing.length > 0) {
          throw new InvalidOptionError(
            `dependencies.declare: {${missing.join('}, {')}} of ${JSON.stringify(target)} is not in ${JSON.stringify(text)}; give rule.via to map it`,
          );
        }
      }
      this.#rules.push({ target: t, on, via: rule.via as DependencyRule['via'] }); // vars hold every placeholder of the pattern that matched
    }
    return this;
  }

  /** Records that `key` was derived from `sources` (adds to what is already recorded). */
  link(key: string, sources: readonly string[]): void {
    if (sources.length === 0) return;
    const before = this.#sources.get(key);
    const all = before === undefined ? [...new Set(sources)] : [...new Set([...before, ...sources])];
    this.#sources.set(key, all);
    indexKey(this.#dependents, key, all.filter((s) => s !== key)); // no self-edge
  }

  /** Forgets the per-entry edges of `key` (it was dropped, evicted or replaced). */
  unlink(key: string): void {
    const sources = this.#sources.get(key);
    if (sources === undefined) return;
    this.#sources.delete(key);
    unindexKey(this.#dependents, key, sources);
  }

  /** What `key` was recorded as derived from (per-entry edges only). */
  sourcesOf(key: string): readonly string[] {
    return this.#sources.get(key) ?? [];
  }

  /**
   * Every key derived from `roots`, transitively, not including the roots themselves. Cycles
   * terminate (each key is visited once); the order is breadth-first.
   */
  dependentsOf(roots: Iterable<string>): string[] {
    const seen = new Set<string>(roots);
    const queue = [...seen];
    const out: string[] = [];
    const visit = (d: string): void => {
      if (seen.has(d)) return;
      seen.add(d);
      queue.push(d);
      out.push(d);
    };
    for (let i = 0; i < queue.length; i++) {
      const k = queue[i]!;
      const set = this.#dependents.get(k);
      if (set !== undefined) for (const d of set) visit(d);
      for (const r of this.#rules) {
        if (!k.startsWith(r.on.head)) continue;
        const m = r.on.re.exec(k);
        if (m === null) continue;
        const vars: Record<string, string> = {};
        r.on.vars.forEach((v, j) => { vars[v] = m[j + 1]!; });
        if (r.via === undefined) visit(fill(r.target, vars));
        else {
          try {
            for (const d of r.via(vars, k)) if (typeof d === 'string' && d.length > 0) visit(d);
          } catch (err) {
            this.ruleErrors++;
            this.onRuleError?.(err);
          }
        }
      }
    }
    return out;
  }

  /** The roots plus everything derived from them. */
  expand(roots: Iterable<string>): string[] {
    const r = [...new Set(roots)];
    return [...r, ...this.dependentsOf(r)];
  }

  /** Forgets every per-entry edge (the cache was cleared); rules stay. */
  clearLinks(): void {
    this.#sources.clear();
    this.#dependents.clear();
  }
}
