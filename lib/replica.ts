import { isCluster, type RedisClient } from './client';

/**
 * A replica's answer to a write: the connection is on a former master (a failover behind one address).
 * Every kit write is a script; before 7.0, Redis wraps an error raised inside one
 * (`ERR Error running script (call to f_…): @user_script:1: @user_script: 1: -READONLY You can't…`).
 */
export const READONLY_REPLY =
  /^READONLY\b|^ERR Error running script \(call to f_[0-9a-f]{40}\): @user_script:\d+: @user_script: \d+: -READONLY\b/;

/**
 * Connections that went to connect again lately, and when: at most once a second each, whatever
 * asked (a write's READONLY, pingRedis). Keyed by the connection's options object, which ioredis
 * hands reconnectOnError as `this` (`duplicate()` makes a new one).
 */
const reconnectedAt = new WeakMap<object, number>();

/**
 * Whether `connection` may connect again now: while its address still leads to the replica, each
 * reconnect meets the same refusal, so at most once a second.
 */
function mayReconnect(connection: object): boolean {
  const now = performance.now();
  if (now - (reconnectedAt.get(connection) ?? Number.NEGATIVE_INFINITY) < 1000) return false;
  reconnectedAt.set(connection, now);
  return true;
}

/**
 * createRedis's ioredis `reconnectOnError`: connect again (1, without resending the refused command:
 * its caller may have given up by then) on a replica's READONLY. ioredis calls it as a method of the
 * connection's own options object (`duplicate()` makes a new one), which keys the limit: a duplicate
 * must not wait on its parent's reconnect.
 */
export function reconnectOnReadonly(this: object | undefined, error: Error): 1 | false {
  return READONLY_REPLY.test(error.message) && mayReconnect(this ?? reconnectOnReadonly) ? 1 : false;
}

/**
 * pingRedis found the connection on a replica: connect again (at most once a second), as a write's
 * READONLY would. A health check that only reported it would keep a readiness probe failing, and
 * the instance out of traffic, with no write ever coming to move the connection.
 */
export function moveOffReplica(redis: RedisClient): void {
  if (!isCluster(redis) && redis.status === 'ready' && mayReconnect(redis.options)) redis.disconnect(true);
}

/**
 * The app's own client on a replica refuses every write until it connects again; createRedis's
 * clients do that themselves (reconnectOnError), and so does any client given its own.
 */
export function leaveReplica(redis: RedisClient): void {
  if (!isCluster(redis) && !redis.options.reconnectOnError) moveOffReplica(redis);
}
