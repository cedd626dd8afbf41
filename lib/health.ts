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
  const name = Array.isArray(role) ? String(role[0]) : 'unknown';
  if (name !== 'master') {
    // The next check (and every write) may find the new master, which the address leads to now.
    moveOffReplica(redis);
    throw new Error(
      `${NOT_MASTER}${name === 'slave' ? 'replica' : name}, which refuses writes (ROLE ${name})`,
    );
  }
}

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
