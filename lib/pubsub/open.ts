import Redis, { type Cluster, type RedisOptions } from 'ioredis';
import { isCluster, type RedisClient } from '../client';

/**
 * Opens the kit's pub/sub connection for a client. No command timeout: a subscriber connection waits
 * for messages by design. It never resubscribes by itself (the kit does, see `life.ts`): ioredis's
 * own resubscribe leaves its SUBSCRIBE's rejection unhandled, so a refused one (an ACL change, which
 * also drops the connection) or one cut by a close right after the reconnect would crash the process.
 */
export function openSubscriberConnection(redis: RedisClient): Redis {
  if (!isCluster(redis)) {
    // Queued while it connects, whatever the app chose for its own client (enableOfflineQueue:
    // false would refuse the first SUBSCRIBE, sent before the new connection is up).
    return (redis as Redis).duplicate({
      commandTimeout: undefined,
      autoResubscribe: false,
      enableOfflineQueue: true,
    });
  }
  return openNodeConnection(redis);
}

/**
 * Classic pub/sub on a Cluster reaches every node, so one plain connection to any node hears it all.
 * It is the kit's own rather than the Cluster's subscriber: that one picks the next node the moment a
 * node refuses, without a pause, so a whole Cluster down spun the CPU (thousands of connection attempts
 * a second). This one does not reconnect by itself: when it ends, `life.ts` opens the next one, to a
 * node picked again (the old one may be gone for good after a failover), with backoff. Unlike
 * ioredis's, it does not move when the Cluster's own connection to its node ends (ioredis says so
 * with '-node' also for an idle timeout or a killed client, and moving loses what is sent meanwhile).
 */
function openNodeConnection(cluster: Cluster): Redis {
  const overrides: RedisOptions = {
    lazyConnect: false,
    enableReadyCheck: true,
    enableOfflineQueue: true,
    readOnly: false,
    retryStrategy: () => null,
    autoResubscribe: false,
    commandTimeout: undefined,
  };
  const known = cluster.nodes('all');
  if (known.length > 0) return pick(known).duplicate(overrides);
  // The Cluster has not connected yet (its startup nodes are resolved asynchronously).
  const startup = (cluster as unknown as { startupNodes?: unknown[] }).startupNodes ?? [];
  return new Redis({ ...cluster.options.redisOptions, ...startupAddress(pick(startup)), ...overrides });
}

function pick<T>(items: readonly T[]): T {
  return items[Math.floor(Math.random() * items.length)] as T;
}

/** A startup node as ioredis accepts it: a port, `host:port` (or a URL), or `{ host, port }`. */
function startupAddress(node: unknown): RedisOptions {
  if (typeof node === 'number') return { port: node };
  if (typeof node === 'string') {
    if (/^\d+$/.test(node)) return { port: Number(node) };
    try {
      const url = new URL(node.includes('://') ? node : `redis://${node}`);
      const address: RedisOptions = {
        host: url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1',
        port: Number(url.port) || 6379,
      };
      if (url.username) address.username = decodeURIComponent(url.username);
      if (url.password) address.password = decodeURIComponent(url.password);
      return address;
    } catch {
      return {};
    }
  }
  if (node && typeof node === 'object') {
    // Whatever else the node carries (a password of its own, tls…) applies to it, as in ioredis.
    const { host, port, ...rest } = node as RedisOptions & { port?: number | string };
    return { ...rest, host: host ?? '127.0.0.1', port: Number(port) || 6379 };
  }
  return {};
}
