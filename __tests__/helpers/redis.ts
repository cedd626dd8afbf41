import Redis, { Cluster } from 'ioredis';
import type { RedisClient } from '../../lib/client';
import { type CreateRedisOptions, closeRedis, createRedis } from '../../lib/connection';
import {
  type RedisClusterHandle,
  type RedisServerHandle,
  type RedisServerOptions,
  startRedisCluster,
  startRedisServer,
} from '../../lib/testing';

/**
 * Starts one throwaway redis-server for the current test file (beforeAll/afterAll) and tracks every
 * client made through it, so nothing is left open even when a test fails.
 */
export function useRedisServer(options: RedisServerOptions = {}) {
  const clients: RedisClient[] = [];
  let server: RedisServerHandle | undefined;
  beforeAll(async () => {
    server = await startRedisServer(options);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => closeRedis(c, { timeoutMs: 200 })));
    await server?.stop();
  });
  return {
    get server(): RedisServerHandle {
      if (!server) throw new Error('redis-server not started yet (use inside a test or hook)');
      return server;
    },
    /** A kit-tuned client (createRedis) on this server. */
    client(extra: CreateRedisOptions & { failFast?: false } = {}): RedisClient {
      // Tests stop and pause servers on purpose: their outage lines would only be noise.
      const c = createRedis({ url: this.server.url, logger: false, ...extra });
      clients.push(c);
      return c;
    },
    /** A plain ioredis client with ioredis defaults, like a user's own. */
    plain(): Redis {
      const c = new Redis(this.server.url);
      clients.push(c);
      return c;
    },
    /** Registers a client made elsewhere for clean-up. */
    track<T extends RedisClient>(c: T): T {
      clients.push(c);
      return c;
    },
  };
}

/** Waits until `check` is true, polling; fails the test with `what` after `timeoutMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Starts one real Redis Cluster (3 masters, and `replicasPerMaster` replicas each) for the current
 * test file and closes every client made through it, then the cluster, even when a test fails.
 */
export function useRedisCluster(options: { replicasPerMaster?: number } = {}) {
  const clients: RedisClient[] = [];
  let handle: RedisClusterHandle | undefined;
  beforeAll(async () => {
    handle = await startRedisCluster({ masters: 3, ...options });
  }, 60_000);
  afterAll(async () => {
    await Promise.all(clients.map((c) => closeRedis(c, { timeoutMs: 500 })));
    await handle?.stop();
  });
  return {
    get cluster(): RedisClusterHandle {
      if (!handle) throw new Error('cluster not started yet (use inside a test or hook)');
      return handle;
    },
    /** A kit-tuned Cluster client (createRedis). */
    client(extra: CreateRedisOptions = {}): Cluster {
      const c = createRedis({
        cluster: { nodes: this.cluster.addresses },
        logger: false,
        ...extra,
      }) as Cluster;
      clients.push(c);
      return c;
    },
    /** A plain ioredis Cluster with ioredis defaults, like a user's own. */
    plain(): Cluster {
      const c = new Cluster(this.cluster.nodes);
      clients.push(c);
      return c;
    },
    /** Registers a client made elsewhere for clean-up. */
    track<T extends RedisClient>(c: T): T {
      clients.push(c);
      return c;
    },
  };
}

/**
 * Gives the file's tests one kit client on `redis` (passed to `use` once it exists) and empties
 * Redis before each test, so tests of one file cannot see each other's keys.
 */
export function useFlushedClient(
  redis: ReturnType<typeof useRedisServer>,
  use: (client: RedisClient) => void,
) {
  let client: RedisClient;
  beforeAll(() => {
    client = redis.client();
    use(client);
  });
  beforeEach(async () => {
    await client.flushall();
  });
}
