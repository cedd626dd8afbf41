// Closing a client: the kit's work on it first (pending-work.ts), then what ioredis still holds
// back, then QUIT, within a bound; also the kit's pub/sub connection made from it.
import { checkClientShape, isCluster, type RedisClient } from './client';
import { MAX_TIMER_MS } from './duration';
import { helperOptions, TIMEOUT_ONLY, timeoutMsOption } from './helper-options';
import { drainWork, turn } from './pending-work';
import { takeSubscriber } from './pubsub';
import { autoPipelines } from './scripts';

/**
 * Closes a client (and the kit's pub/sub connection made from it). While Redis is up, it first waits
 * up to `timeoutMs` (default 1000) for the kit's work in progress on it (pending-work.ts: a handler
 * still running behind `idempotency()` or a cache fill, whose answer is still to be stored; a call in
 * flight) and for the calls ioredis still holds back, then sends QUIT, and disconnects hard if Redis
 * has not answered within `timeoutMs` more.
 * Never rejects for Redis (down, slow or refusing); rejects with a TypeError/RangeError for a bad
 * argument.
 */
export async function closeRedis(
  redis: RedisClient,
  options: { timeoutMs?: number | undefined } = {},
): Promise<void> {
  checkClientShape(redis);
  const timeoutMs = timeoutMsOption(helperOptions(options, TIMEOUT_ONLY, 'closeRedis').timeoutMs, 1000, 1);
  // Taken (marked closed) first: nothing may open a subscriber on it meanwhile.
  const subscriber = takeSubscriber(redis);
  // The kit's work, then what ioredis still holds back, within one budget. A client that is not
  // ready has nothing to flush: its calls fail at once.
  // At most about twice timeoutMs in all (README), counted from here, not from after the drain.
  const endBy = performance.now() + 2 * timeoutMs;
  if (redis.status === 'ready') await drainWork(redis, endBy - timeoutMs, () => redis.status === 'ready');
  await Promise.all([
    subscriber ? closeOne(subscriber, timeoutMs, endBy) : undefined,
    closeOne(redis, timeoutMs, endBy),
  ]);
}

/** `endBy`: `performance.now()` by which closeRedis resolves; the flush ends `timeoutMs` before it. */
async function closeOne(redis: RedisClient, timeoutMs: number, endBy: number): Promise<void> {
  try {
    await closeConnection(redis, timeoutMs, endBy);
  } finally {
    // A Sentinel client's failover detector keeps a connection to each sentinel open after QUIT,
    // and with it the process: only disconnect() cleans it up.
    if (!isCluster(redis) && redis.options.sentinels) redis.disconnect();
  }
}

async function closeConnection(redis: RedisClient, timeoutMs: number, endBy: number): Promise<void> {
  if (redis.status === 'end') return;
  if (redis.status === 'reconnecting') {
    // No socket is open. ioredis stops reconnecting, but nothing will ever end the client (no socket
    // is left to close: redis/ioredis#1247), so waiting for its 'end' would only wait out the budget.
    redis.disconnect();
    return;
  }
  let hardTimer: NodeJS.Timeout | undefined;
  let lastTimer: NodeJS.Timeout | undefined;
  // A Cluster's disconnect() empties its node list at once (its nodes' sockets still closing): the
  // nodes are noted before each disconnect, so the last-resort timer can still destroy their sockets.
  const nodes = new Set<object>();
  const noteNodes = (): void => {
    if (isCluster(redis)) for (const node of redis.nodes()) nodes.add(node);
  };
  const disconnect = (): void => {
    noteNodes();
    redis.disconnect();
  };
  const ended = new Promise<void>((resolve) => {
    redis.once('end', () => resolve());
    // Whatever happens, never make closeRedis wait past endBy (twice the budget from its start).
    // Capped (Node fires a longer timer after 1 ms), so it may come with the hard disconnect's: it
    // disconnects too, rather than leave that to a timer it clears.
    lastTimer = setTimeout(
      () => {
        // ioredis destroys a socket that does not close (a frozen Redis) only disconnectTimeout
        // after disconnect(): destroy it now, so the client has ended when closeRedis resolves.
        noteNodes();
        const sockets = (isCluster(redis) ? [...nodes] : [redis]).map(
          (one) => (one as unknown as { stream?: { destroy(): void } }).stream,
        );
        redis.disconnect();
        for (const socket of sockets) socket?.destroy();
        setTimeout(resolve, 50).unref?.();
      },
      Math.min(Math.max(1, Math.ceil(endBy - performance.now())), MAX_TIMER_MS),
    );
  });
  // QUIT is never auto-pipelined: ioredis writes it at once, and Redis drops what comes after it.
  // Auto-pipelined calls go at the next turn, or, held behind a pipeline still awaiting its reply,
  // once that reply is in: let them go first (until timeoutMs before endBy, as the drain).
  const flushBy = endBy - timeoutMs;
  if (redis.status === 'ready') await turn();
  while (redis.status === 'ready' && (autoPipelines(redis)?.size ?? 0) > 0 && performance.now() < flushBy) {
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  if (redis.status === 'ready') {
    // QUIT lets in-flight replies arrive; if Redis does not answer in time, drop the socket.
    redis.quit().catch(disconnect);
    // timeoutMs for its answer, but no later than endBy.
    hardTimer = setTimeout(disconnect, Math.max(1, Math.min(timeoutMs, endBy - performance.now())));
  } else {
    // QUIT would sit in the offline queue until a reconnect; nothing to flush, so drop the socket.
    disconnect();
  }
  await ended;
  clearTimeout(hardTimer);
  clearTimeout(lastTimer);
}
