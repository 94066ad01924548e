import { Registry } from 'prom-client';
import { InvalidOptionError } from '../../bus/errors.js';

/**
 * A prom-client `Registry` of any copy of prom-client 15: the app's own, when it is not the copy
 * cachebus resolves (two versions installed side by side, pnpm, a bundler). prom-client's
 * `Registry` has private fields, so two copies' classes are different types to TypeScript, and
 * prom-client's `AggregatorRegistry.setRegistries` checks `instanceof`: cachebus accepts this
 * structural type and checks by shape. Methods, not function-typed properties, so either copy's
 * signatures are assignable.
 */
export interface RegistryLike {
  readonly contentType: string;
  metrics(): Promise<string>;
  getMetricsAsJSON(): Promise<unknown[]>;
  registerMetric(metric: never): void;
  getSingleMetric(name: string): unknown;
  removeSingleMetric(name: string): void;
}

export function isRegistryLike(x: unknown): x is RegistryLike {
  if (typeof x !== 'object' || x === null) return false;
  const r = x as Partial<Record<keyof RegistryLike, unknown>>;
  return typeof r.contentType === 'string' && typeof r.metrics === 'function' && typeof r.getMetricsAsJSON === 'function'
    && typeof r.registerMetric === 'function' && typeof r.getSingleMetric === 'function' && typeof r.removeSingleMetric === 'function';
}

/**
 * The registry to register cachebus' metrics in, typed as this copy's `Registry`: metrics call
 * only `registerMetric` on it (no `instanceof`), so an app's registry of another copy works as is.
 * Anything else is refused here, naming the option, rather than failing at the first metric.
 */
export function adoptRegistry(r: RegistryLike | undefined, option: string): Registry {
  if (r === undefined) return new Registry();
  if (!isRegistryLike(r)) throw new InvalidOptionError(`${option} must be a prom-client Registry (metrics, getMetricsAsJSON, registerMetric)`);
  return r as unknown as Registry;
}

/** This copy's `Registry` answering for `r` (for prom-client code that checks `instanceof Registry`). */
export function ownRegistry(r: Registry): Registry {
  if (r instanceof Registry) return r;
  let own = views.get(r);
  if (own === undefined) {
    own = new RegistryView(r);
    views.set(r, own);
  }
  return own;
}

const views = new WeakMap<object, Registry>();

/** An empty registry of this copy whose JSON (what the cluster primary asks a worker for) is `r`'s. */
class RegistryView extends Registry {
  readonly #of: RegistryLike;
  constructor(of: RegistryLike) {
    super();
    this.#of = of;
  }
  override getMetricsAsJSON(): ReturnType<Registry['getMetricsAsJSON']> {
    return this.#of.getMetricsAsJSON() as ReturnType<Registry['getMetricsAsJSON']>;
  }
  override metrics(): Promise<string> {
    return this.#of.metrics();
  }
}
