import type { Scenario } from '../scenario.js';
import { busOff } from './bus-off.js';
import { busOn } from './bus-on.js';
import { chaos } from './chaos.js';
import { externalWrites } from './external-writes.js';
import { writeBehind } from './write-behind.js';

/** Every scenario, in the order the demo runs them. One file per scenario. */
export const scenarios: readonly Scenario[] = [busOff, busOn, writeBehind, externalWrites, chaos];

const norm = (s: string): string => s.trim().toLowerCase().replace(/[\s_]+/g, '-');

/** The scenarios named (by `bus on` or `bus-on`), in the demo's order; all when `names` is empty. */
export function selectScenarios(names: readonly string[]): Scenario[] {
  if (names.length === 0 || names.some((n) => norm(n) === 'all')) return [...scenarios];
  const wanted = new Set(names.map(norm));
  const unknown = [...wanted].filter((n) => !scenarios.some((s) => norm(s.name) === n));
  if (unknown.length > 0) {
    throw new Error(`unknown scenario ${unknown.join(', ')} (known: ${scenarios.map((s) => norm(s.name)).join(', ')})`);
  }
  return scenarios.filter((s) => wanted.has(norm(s.name)));
}
