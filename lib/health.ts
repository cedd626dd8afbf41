import type { Cluster, Redis } from 'ioredis';
import { checkClientShape, isCluster, type RedisClient } from './client';
import { helperOptions, TIMEOUT_ONLY, timeoutMsOption } from './helper-options';
import { withoutCommandArgs } from './redact';
import { moveOffReplica } from './replica';

/** Result of {@link pingRedis}. */
export interface RedisHealth {
  ok: boolean;
  latencyMs: number;
  mode: 'standalone' | 'cluster' | 'sentinel';
  error?: string;
}

/** How the client is connected. */
export function redisMode(redis: RedisClient): RedisHealth['mode'] {
  if (isCluster(redis)) return 'cluster';
  return (redis as Redis).options.sentinels?.length ? 'sentinel' : 'standalone';
}

/**
 * Pings Redis for health checks; never waits longer than `timeoutMs` (default 1000). Never rejects
 * for Redis (down or slow: `ok: false`); rejects with a TypeError/RangeError for a bad argument.
 */
export async function pingRedis(
  redis: RedisClient,
  options: { timeoutMs?: number | undefined } = {},
): Promise<RedisHealth> {
  const client = checkClientShape(redis);
  const { timeoutMs } = helperOptions(options, TIMEOUT_ONLY, 'pingRedis');
  return (await probeRedis(client, { timeoutMs: timeoutMsOption(timeoutMs, 1000, 1) })).health;
}

/** A server that answered, but is no master: it refuses every write the kit makes. */
export class NotMasterError extends Error {
  /** What the server is: "a replica, which refuses writes (ROLE slave)". */
  readonly what: string;

  constructor(role: string) {
    const what = `a ${role === 'slave' ? 'replica' : role}, which refuses writes (ROLE ${role})`;
    super(`connected to ${what}`);
    this.what = what;
  }
}

/** {@link pingRedis}, with the error behind a failed check (connectRedis words its rejection by it). */
export async function probeRedis(
  redis: RedisClient,
  options: { timeoutMs?: number | undefined } = {},
): Promise<{ health: RedisHealth; cause?: unknown }> {
  const timeoutMs = options.timeoutMs ?? 1000;
  const mode = redisMode(redis);
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    const pong = isCluster(redis) ? clusterUp(redis) : writable(redis);
    pong.catch(() => {});
    await Promise.race([pong, timeout]);
    return { health: { ok: true, latencyMs: round(performance.now() - started), mode } };
  } catch (error) {
    withoutCommandArgs(error);
    const latencyMs = round(performance.now() - started);
    return { health: { ok: false, latencyMs, mode, error: (error as Error).message }, cause: error };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A replica answers PING while it refuses every write the kit makes (`READONLY`): the connection an
 * app keeps after a failover behind one address, or one made to a replica's address by mistake. Its
 * `ROLE` is what tells; the connection is then made again, as a write's READONLY would. An ACL user
 * that may not run ROLE gets the PING.
 */
async function writable(redis: Redis): Promise<void> {
  const role = await askOrPing(redis, () => redis.role());
  // Inside the app's MULTI, ROLE is only QUEUED: the server answered, which is all PING told either.
  if (!Array.isArray(role)) return;
  const name = String(role[0]);
  if (name === 'master') {
    wasMaster.add(redis);
    return;
  }
  // A connection that was on a master is on a former one (a failover behind its address): the next
  // check, and every write, may find the new master the address leads to now. One that was on a
  // replica from the start (made so on purpose, or by mistake) would only meet it again.
  if (name === 'slave' && wasMaster.has(redis)) moveOffReplica(redis);
  throw new NotMasterError(name);
}

/** Connections pingRedis has seen on a master. */
const wasMaster = new WeakSet<object>();

/**
 * A Cluster answers PING while it refuses every key (`cluster_state:fail`, e.g. a master down with no
 * replica): its state is what tells. An ACL user that may not run CLUSTER INFO gets the PING.
 */
async function clusterUp(redis: Cluster): Promise<void> {
  const info = await askOrPing(redis, () => redis.cluster('INFO'));
  if (info === undefined) return;
  const state = /cluster_state:(\w+)/.exec(String(info))?.[1];
  if (state !== 'ok') throw new Error(`cluster_state is ${state ?? 'unknown'}`);
}

/**
 * `ask`'s answer; or, when the server refuses that command to this client (an ACL user without it,
 * `NOPERM`; a managed Redis that disabled or renamed it), undefined once it has answered a PING.
 */
async function askOrPing<T>(redis: RedisClient, ask: () => Promise<T>): Promise<T | undefined> {
  try {
    return await ask();
  } catch (error) {
    if (!/^(NOPERM|ERR unknown command)/.test((error as Error).message)) throw error;
    await redis.ping();
    return undefined;
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
