import type { RedisClient } from '../../lib/client';
import { subscribe } from '../../lib/pubsub';
import { eventually } from './redis';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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
      // Bounded, so that a publisher that never connects fails here, by name, not as a test timeout.
      await Promise.race([publisher.publish(channel, message), sleep(1000)]);
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
  // Not `await client.connect()`: a Cluster's promise never settles when its ready check fails once
  // (ioredis reconnects by itself then, and resolves only the next attempt's own promise).
  client.connect().catch(() => {});
  await eventually(() => client.status === 'ready', 'the client to connect again', 10_000);
  await eventually(() => subscribed.counts.reconnects === 1, 'the reconnect hook');
  await publishUntilHeard(
    publisher,
    channel,
    'after',
    subscribed.heard,
    'a message after the client was connected again',
  );
}
