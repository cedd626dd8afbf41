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

/** Every scenario by id. */
export const SCENARIOS: ReadonlyMap<string, Scenario> = new Map(
  GROUPS.flatMap((g) => g.scenarios).map((s) => [s.id, s]),
);

export function findScenario(id: string): Scenario | undefined {
  return SCENARIOS.get(id);
}
