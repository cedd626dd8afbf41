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
  const local = await probeLocal(LOCAL_URL);
  if (local.ok) {
    const redis = createRedis({ url: LOCAL_URL });
    return { redis, source: `local Redis at ${LOCAL_URL}`, close: () => closeRedis(redis) };
  }
  // What answered there but is passed over (a Redis that needs a password, a replica, one still
  // loading, another service) is named, since two demo processes then no longer share their sessions and feed through it.
  if (local.why) console.warn(`${local.why} Using a throwaway redis-server instead.`);
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
 * Whether a usable Redis answers at `url` (the demo's 6379); when not, why what answered there is not
 * used, for a start-up line (`why` undefined: nothing answered, the usual case).
 */
export async function probeLocal(url: string): Promise<{ ok: boolean; why?: string }> {
  const probe = createRedis({
    url,
    lazyConnect: true,
    retryStrategy: () => null,
    connectTimeout: 500,
    // Nothing there is the usual case, not an outage to report.
    logger: false,
  });
  probe.on('error', () => {});
  const { ok, error } = await pingRedis(probe, { timeoutMs: 700 });
  await closeRedis(probe, { timeoutMs: 200 });
  return ok ? { ok } : { ok, why: whyNotUsed(new URL(url).host, error) };
}

/** What pingRedis's error says about what listens at `where`, in the user's terms. */
function whyNotUsed(where: string, error: string | undefined): string | undefined {
  if (
    !error ||
    /ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL|Connection is closed/i.test(error)
  ) {
    return undefined;
  }
  if (/^(NOAUTH|WRONGPASS)\b/.test(error)) {
    return `The Redis on ${where} needs a password (${error.split('.')[0]}); to use it, set REDIS_URL=redis://:PASSWORD@${where}.`;
  }
  if (/replica/i.test(error))
    return `The Redis on ${where} is a replica; to use its master, set REDIS_URL to it.`;
  if (/Unknown RESP type|Protocol error/i.test(error)) {
    return `What listens on ${where} is not a Redis server (another service on that port?).`;
  }
  if (/Command timed out|no answer within/i.test(error)) {
    return `Something on ${where} accepted the connection but did not answer as a ready Redis (one still loading its dataset?).`;
  }
  return `The Redis on ${where} cannot be used (${error}).`;
}
