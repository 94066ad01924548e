import type { Scenario } from '../scenario.js';

/**
 * The problem: every process (and thread) keeps its own LRU and nobody tells the others when a
 * row changes. The writer drops its own copy; every other copy stays old until evicted, which
 * with a hot set is never.
 */
export const busOff: Scenario = {
  name: 'bus off',
  summary: 'plain per-process LRU caches: stale reads pile up and never heal',
  bus: false,
  expect: 'stale',
};
