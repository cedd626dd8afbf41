import type { RedisClient } from '../../lib/client';
import { subscribe } from '../../lib/pubsub';
import { eventually } from './redis';

/** Subscribes, keeping what is heard and how often `onReconnect` ran. */
export async function listen(client: RedisClient, channel: string) {
  const heard: string[] = [];
  const counts = { reconnects: 0 };
  const unsubscribe = await subscribe(client, channel, (m) => heard.push(m), {
    onReconnect: () => counts.reconnects++,
  });
  return { heard, counts, unsubscribe };
}

/** Publishes `message` until `heard` holds it: a resubscribe may still be on its way. */
export function publishUntilHeard(
  publisher: { publish(channel: string, message: string): Promise<unknown> },
  channel: string,
  message: string,
  heard: readonly string[],
  what: string,
  timeoutMs?: number,
): Promise<void> {
  return eventually(
    async () => {
      await publisher.publish(channel, message);
      return heard.includes(message);
    },
    what,
    timeoutMs,
  );
}
