import type { Cluster, Redis } from 'ioredis';

/** Any ioredis client the kit accepts: a standalone/sentinel `Redis` or a `Cluster`. */
export type RedisClient = Redis | Cluster;

/** Validates the `redis` option of a factory: an ioredis Redis or Cluster that answers commands. */
export function checkClient(redis: unknown, option = 'redis'): RedisClient {
  const client = checkClientShape(redis, option);
  if (stringNumbersOf(client)) {
    throw new TypeError(
      `express-redis-kit: option "${option}" is a client made with stringNumbers: true, which turns the integer replies the kit decides on into strings (every request would be rate limited, every cache lookup would wait). Pass a client without it: redis.duplicate({ stringNumbers: false }), or for a Cluster one made with redisOptions: { stringNumbers: false }.`,
    );
  }
  const mode = (client as { mode?: unknown }).mode;
  if (mode === 'subscriber' || mode === 'monitor') {
    throw new TypeError(
      `express-redis-kit: option "${option}" is a client in ${mode} mode (${mode === 'subscriber' ? 'SUBSCRIBE with protocol 2' : 'MONITOR'}), which refuses every command the kit sends. Pass a client of its own: redis.duplicate().`,
    );
  }
  return client;
}

/**
 * The `redis` argument of a helper (pingRedis, closeRedis, configureBreaker, subscribe): any ioredis
 * Redis or Cluster, in any mode (closing a subscriber is fine; the factories need one that answers
 * their commands, and check that too).
 */
export function checkClientShape(redis: unknown, option = 'redis'): RedisClient {
  const candidate = redis as Partial<Redis> | undefined;
  if (
    !candidate ||
    typeof candidate !== 'object' ||
    typeof candidate.defineCommand !== 'function' ||
    typeof candidate.duplicate !== 'function'
  ) {
    throw new TypeError(
      `express-redis-kit: option "${option}" must be an ioredis Redis or Cluster client, e.g. createRedis() or new Redis(url); got ${describe(redis)}.`,
    );
  }
  return redis as RedisClient;
}

/**
 * ioredis's `stringNumbers` (standalone, or a Cluster's nodes): integer replies come back as
 * strings. Any true-ish value counts, as ioredis reads it: a URL's `?stringNumbers=false` is the
 * string "false", which turns it on.
 */
export function stringNumbersOf(redis: RedisClient): boolean {
  const options = (
    redis as { options?: { stringNumbers?: unknown; redisOptions?: { stringNumbers?: unknown } } }
  ).options;
  return Boolean(options?.stringNumbers) || Boolean(options?.redisOptions?.stringNumbers);
}

/** True for an ioredis `Cluster`. */
export function isCluster(redis: RedisClient): redis is Cluster {
  return (redis as { isCluster?: boolean }).isCluster === true;
}

function describe(value: unknown): string {
  if (value === undefined) return 'undefined (the option is required)';
  if (value === null) return 'null';
  // createRedis({ failFast: true }) and connectRedis() resolve to the client: easy to pass un-awaited,
  // and the types cannot always tell (options typed as a whole CreateRedisOptions).
  if (typeof (value as { then?: unknown }).then === 'function') {
    return 'a Promise; createRedis({ failFast: true }) and connectRedis() resolve to the client, so await it first';
  }
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'Object'})`;
  return typeof value;
}
