import { bare, baseline } from './baseline';
import { cacheGroup, cacheSlowGroup } from './cache';
import { idempotencyGroup } from './idempotency';
import { rateLimitBusyGroup, rateLimitGroup } from './rate-limit';
import { rateLimitDenyGroup } from './rate-limit-deny';
import { sessionGroup } from './session';
import type { Group, Scenario } from './types';

/** Every group, in report order. Adding a scenario = adding data to one of these modules. */
export const GROUPS: Group[] = [
  baseline,
  rateLimitGroup,
  rateLimitBusyGroup,
  rateLimitDenyGroup,
  cacheGroup,
  cacheSlowGroup,
  idempotencyGroup,
  sessionGroup,
];

export { bare };

export function findScenario(id: string): Scenario | undefined {
  for (const group of GROUPS) {
    const found = group.scenarios.find((s) => s.id === id);
    if (found) return found;
  }
  return undefined;
}
