import { closeRedis, connectRedis, createRedis, maskUrl, pingRedis, type RedisClient } from '../lib';
import { type RedisServerHandle, RedisServerNotFoundError, startRedisServer } from '../lib/testing';

/** The Redis the demo runs on, and how to let go of it. */
export interface DemoRedis {
  redis: RedisClient;
  /** Human-readable description, printed at start-up. */
  source: string;
  /** The throwaway server, when the demo started one (for fault drills and clean-up). */
  server?: RedisServerHandle;
  close(): Promise<void>;
}

const LOCAL_URL = 'redis://127.0.0.1:6379';

/**
 * Picks Redis the way the README promises: REDIS_URL if set (must answer), else a Redis already on
 * 127.0.0.1:6379, else a throwaway redis-server started here and stopped on exit.
 */
export async function resolveDemoRedis(): Promise<DemoRedis> {
  if (process.env.REDIS_URL) {
    // Without a url, connectRedis reads REDIS_URL itself, so a bad one is reported under that name.
    const redis = await connectRedis();
    return { redis, source: `REDIS_URL (${maskUrl(process.env.REDIS_URL)})`, close: () => closeRedis(redis) };
  }
  const probe = createRedis({
    url: LOCAL_URL,
    lazyConnect: true,
    retryStrategy: () => null,
    connectTimeout: 500,
    // Nothing on 6379 is the usual case, not an outage to report.
    logger: false,
  });
  probe.on('error', () => {});
  const local = await pingRedis(probe, { timeoutMs: 700 });
  await closeRedis(probe, { timeoutMs: 200 });
  if (local.ok) {
    const redis = createRedis({ url: LOCAL_URL });
    return { redis, source: `local Redis at ${LOCAL_URL}`, close: () => closeRedis(redis) };
  }
  // A Redis of the user's own that refused (a password, still loading, a replica) is passed over:
  // said, since two demo processes then no longer share their sessions and feed through it.
  const refused = localRefusal(local.error);
  if (refused) console.warn(`${refused} Using a throwaway redis-server instead.`);
  let server: RedisServerHandle;
  try {
    server = await startRedisServer();
  } catch (error) {
    if (!(error instanceof RedisServerNotFoundError)) throw error;
    throw new Error(`${error.message} Or set REDIS_URL to a running Redis.`, { cause: error });
  }
  const redis = createRedis({ url: server.url });
  return {
    redis,
    server,
    source: `throwaway redis-server at ${server.url} (stopped on exit)`,
    close: async () => {
      await closeRedis(redis);
      await server.stop();
    },
  };
}

/**
 * Why the Redis that answered on 6379 is not used, for a start-up line; undefined when nothing Redis
 * answered there (nothing listening, or silence), the usual case.
 */
export function localRefusal(error: string | undefined): string | undefined {
  if (
    !error ||
    /ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL|Connection is closed|no answer within/i.test(
      error,
    )
  ) {
    return undefined;
  }
  return `Redis on 127.0.0.1:6379 cannot be used (${error}); to use it, set REDIS_URL (with a password: redis://:PASSWORD@127.0.0.1:6379).`;
}
