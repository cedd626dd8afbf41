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

/**
 * Connects `client` again after the app closed it, then waits for the reconnect hook and for
 * `channel` to be heard again.
 */
export async function connectAgainAndHear(
  client: RedisClient,
  publisher: Parameters<typeof publishUntilHeard>[0],
  channel: string,
  subscribed: Awaited<ReturnType<typeof listen>>,
): Promise<void> {
  await client.connect();
  await eventually(() => subscribed.counts.reconnects === 1, 'the reconnect hook');
  await publishUntilHeard(
    publisher,
    channel,
    'after',
    subscribed.heard,
    'a message after the client was connected again',
  );
}
