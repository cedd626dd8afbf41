import { type KitComponent, type KitEvent, onKitEvent } from '../../lib/events';
import { eventually } from './redis';

/**
 * Records one component's kit events until `stop()`. Events such as a cache `store` or a rate-limit
 * `refund` happen after the response, so tests wait on them instead of sleeping.
 */
export function captureEvents(component: KitComponent) {
  const events: KitEvent[] = [];
  const stop = onKitEvent((e) => {
    if (e.component === component) events.push(e);
  });
  const count = (type: string) => events.filter((e) => e.type === type).length;
  return {
    events,
    stop,
    count,
    /** Resolves once at least `n` events of `type` were seen. */
    waitFor: (type: string, n: number) => eventually(() => count(type) >= n, `${n} "${type}" event(s)`),
    /** Waits for `n` events of `type`, then a little longer, and returns how many came: extras show. */
    settled: async (type: string, n: number) => {
      await eventually(() => count(type) >= n, `${n} "${type}" event(s)`);
      await new Promise((r) => setTimeout(r, 50));
      return count(type);
    },
  };
}
