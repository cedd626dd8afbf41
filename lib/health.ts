import type { Cluster, Redis } from 'ioredis';
import { isCluster, type RedisClient } from './client';
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

/** Pings Redis for health checks. Never throws; never waits longer than `timeoutMs` (default 1000). */
export async function pingRedis(
  redis: RedisClient,
  options: { timeoutMs?: number | undefined } = {},
): Promise<RedisHealth> {
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
    return { ok: true, latencyMs: round(performance.now() - started), mode };
  } catch (error) {
    return {
      ok: false,
      latencyMs: round(performance.now() - started),
      mode,
      error: (error as Error).message,
    };
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
  let role: unknown;
  try {
    role = await redis.role();
  } catch (error) {
    // An ACL user without it, or a managed Redis that disabled or renamed it.
    if (/^(NOPERM|ERR unknown command)/.test((error as Error).message)) return void (await redis.ping());
    throw error;
  }
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
  throw new Error(`${NOT_MASTER}${name === 'slave' ? 'replica' : name}, which refuses writes (ROLE ${name})`);
}

/** Connections pingRedis has seen on a master. */
const wasMaster = new WeakSet<object>();

/** How {@link pingRedis}'s `error` starts when the server answered but is no master. */
export const NOT_MASTER = 'connected to a ';

/**
 * A Cluster answers PING while it refuses every key (`cluster_state:fail`, e.g. a master down with no
 * replica): its state is what tells. An ACL user that may not run CLUSTER INFO gets the PING.
 */
async function clusterUp(redis: Cluster): Promise<void> {
  let info: unknown;
  try {
    info = await redis.cluster('INFO');
  } catch (error) {
    if (/^NOPERM/.test((error as Error).message)) return void (await redis.ping());
    throw error;
  }
  const state = /cluster_state:(\w+)/.exec(String(info))?.[1];
  if (state !== 'ok') throw new Error(`cluster_state is ${state ?? 'unknown'}`);
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
