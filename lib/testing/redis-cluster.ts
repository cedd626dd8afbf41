import Redis from 'ioredis';
import { type RedisServerHandle, startRedisServer } from './redis-server';

/** Options of {@link startRedisCluster}. */
export interface RedisClusterOptions {
  /** Number of masters (slots are split evenly). Default 3. */
  masters?: number;
  /** Replicas per master. Default 0. */
  replicasPerMaster?: number;
  /** How long to wait for `cluster_state:ok`. Default 20 s. */
  readyTimeoutMs?: number;
  /** Path of the redis-server binary. */
  binary?: string;
}

/** A real Redis Cluster of throwaway redis-server processes on loopback. */
export interface RedisClusterHandle {
  /** Every node (masters first) as `{ host, port }`, ready for `new Cluster(nodes)`. */
  readonly nodes: Array<{ host: string; port: number }>;
  /** The same as `host:port` strings (the `REDIS_CLUSTER_NODES` format). */
  readonly addresses: string[];
  readonly servers: RedisServerHandle[];
  /** Stops every node. Idempotent. */
  stop(): Promise<void>;
}

const SLOTS = 16384;

/**
 * Builds a real Redis Cluster: starts the nodes with `cluster-enabled`, assigns slot ranges, joins
 * them with CLUSTER MEET, attaches replicas, and waits until every node reports `cluster_state:ok`.
 */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  const replicasPerMaster = options.replicasPerMaster ?? 0;
  if (!Number.isInteger(masters) || masters < 1)
    throw new RangeError('startRedisCluster: "masters" must be >= 1');
  if (!Number.isInteger(replicasPerMaster) || replicasPerMaster < 0) {
    throw new RangeError('startRedisCluster: "replicasPerMaster" must be >= 0');
  }
  const total = masters * (1 + replicasPerMaster);
  const servers: RedisServerHandle[] = [];
  const admins: Redis[] = [];
  const stop = async () => {
    await Promise.all(servers.map((s) => s.stop()));
  };
  try {
    for (let i = 0; i < total; i++) {
      servers.push(
        await startRedisServer({
          binary: options.binary,
          // The cluster bus listens on the port + 10000.
          maxPort: 55535,
          args: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            `nodes-${i}.conf`,
            '--cluster-node-timeout',
            '2000',
            // A replica shows in CLUSTER SLOTS (what clients read) once its offset moved, on the
            // master's ping to it: every 10 s by default.
            '--repl-ping-replica-period',
            '1',
          ],
        }),
      );
    }
    for (const s of servers)
      admins.push(new Redis({ host: s.host, port: s.port, lazyConnect: true, protocol: 2 }));
    await Promise.all(admins.map((a) => a.connect()));
    const ids = await Promise.all(admins.map((a) => a.call('CLUSTER', 'MYID') as Promise<string>));

    // Distinct config epochs avoid the collision dance on a fresh cluster (redis-cli does the same).
    await Promise.all(admins.map((a, i) => a.call('CLUSTER', 'SET-CONFIG-EPOCH', String(i + 1))));
    for (let m = 0; m < masters; m++) {
      const start = Math.floor((m * SLOTS) / masters);
      const end = Math.floor(((m + 1) * SLOTS) / masters) - 1;
      // ADDSLOTS, not ADDSLOTSRANGE: Redis 6.2 has only the former.
      const slots = Array.from({ length: end - start + 1 }, (_, i) => String(start + i));
      await admins[m]!.call('CLUSTER', 'ADDSLOTS', ...slots);
    }
    const first = servers[0]!;
    await Promise.all(admins.slice(1).map((a) => a.call('CLUSTER', 'MEET', first.host, String(first.port))));

    const deadline = Date.now() + (options.readyTimeoutMs ?? 20_000);
    await until(deadline, 'every node to know every other node', async () => {
      const views = await Promise.all(admins.map((a) => a.call('CLUSTER', 'NODES') as Promise<string>));
      return views.every((v) => v.trim().split('\n').length === total);
    });
    for (let r = 0; r < masters * replicasPerMaster; r++) {
      const replica = admins[masters + r]!;
      await replica.call('CLUSTER', 'REPLICATE', ids[r % masters]!);
    }
    await until(deadline, 'cluster_state:ok on every node', async () => {
      const infos = await Promise.all(admins.map((a) => a.call('CLUSTER', 'INFO') as Promise<string>));
      return infos.every((info) => info.includes('cluster_state:ok'));
    });
    if (replicasPerMaster > 0) {
      await until(deadline, 'replicas to finish their first sync', async () => {
        const infos = await Promise.all(admins.slice(masters).map((a) => a.info('replication')));
        return infos.every((info) => info.includes('master_link_status:up'));
      });
      // Clients find the replicas through CLUSTER SLOTS: ready once every node lists them all.
      await until(deadline, 'every node to list the replicas in CLUSTER SLOTS', async () => {
        const views = await Promise.all(
          admins.map((a) => a.call('CLUSTER', 'SLOTS') as Promise<unknown[][]>),
        );
        return views.every(
          (ranges) => ranges.length > 0 && ranges.every((range) => range.length >= 3 + replicasPerMaster),
        );
      });
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    await Promise.all(admins.map((a) => a.quit().catch(() => a.disconnect())));
  }
  const nodes = servers.map((s) => ({ host: s.host, port: s.port }));
  return { nodes, addresses: nodes.map((n) => `${n.host}:${n.port}`), servers, stop };
}

async function until(deadline: number, what: string, check: () => Promise<boolean>): Promise<void> {
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`startRedisCluster: timed out waiting for ${what}`);
}
