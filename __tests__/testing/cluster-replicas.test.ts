import Redis, { Cluster } from 'ioredis';
import { type RedisClusterHandle, startRedisCluster } from '../../lib/testing';

// startRedisCluster({ replicasPerMaster: 1 }) resolves once the replicas are discoverable:
// CLUSTER SLOTS (what ioredis and every cluster client read) lists them on every node.
let cluster: RedisClusterHandle;
const clients: Array<Redis | Cluster> = [];
beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
}, 60_000);
afterAll(async () => {
  for (const c of clients) c.disconnect();
  await cluster?.stop();
});

it('every node lists each slot range with its replica in CLUSTER SLOTS once ready', async () => {
  const views = await Promise.all(
    cluster.nodes.map(async (n) => {
      const r = new Redis({ ...n, lazyConnect: true });
      clients.push(r);
      await r.connect();
      const slots = (await r.call('CLUSTER', 'SLOTS')) as unknown[][];
      return slots.filter((range) => range.length >= 4).length; // [start, end, master, replica…]
    }),
  );
  expect(views).toEqual([3, 3, 3, 3, 3, 3]);
});

it("an ioredis Cluster made right after start sees the replicas (scaleReads: 'slave')", async () => {
  const c = new Cluster(cluster.nodes, { scaleReads: 'slave' });
  clients.push(c);
  await new Promise((r) => c.once('ready', r));
  expect(c.nodes('slave')).toHaveLength(3);
});
