import type { Scenario } from '../scenario.js';

/**
 * The fix: the same caches with the invalidation bus. A read can still be stale for the few
 * milliseconds between a commit and the invalidation reaching a cache, never longer than the bound.
 */
export const busOn: Scenario = {
  name: 'bus on',
  summary: 'same caches + invalidation bus: stale only inside the propagation window',
  bus: true,
  expect: 'bounded',
};
