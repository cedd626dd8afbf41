import Redis, { type Cluster } from 'ioredis';
import { closeRedis, createRedis } from '../../lib/connection';
import { subscribeDurably } from '../../lib/pubsub';
import { publishUntilHeard } from '../helpers/pubsub';
import { eventually, useRedisCluster } from '../helpers/redis';

// Its own cluster: the test takes a node out of it for good.
describe('pub/sub through a Redis Cluster that is scaled down', () => {
  const redis = useRedisCluster();

  it('moves off a node removed from the Cluster while it keeps running, once the Cluster sees its new slots', async () => {
    const [a, b, c] = redis.cluster.nodes as [
      { host: string; port: number },
      { host: string; port: number },
      { host: string; port: number },
    ];
    const admins = [a, b, c].map((n) => new Redis(n));
    const [adminA, adminB, adminC] = admins as [Redis, Redis, Redis];
    const onC = async () => String(await adminC.call('CLIENT', 'LIST', 'TYPE', 'pubsub')).includes('sub=1');
    // Given by name, before the Cluster connected: the subscriber goes to a startup node picked at
    // random, as `localhost`. Clients are made until one's is on C.
    let client: Cluster | undefined;
    let subscription: ReturnType<typeof subscribeDurably> | undefined;
    const received: string[] = [];
    let reconnects = 0;
    for (let tries = 0; tries < 30 && !(subscription && (await onC())); tries++) {
      await subscription?.unsubscribe();
      if (client) await closeRedis(client);
      client = redis.track(
        createRedis({
          cluster: { nodes: [a, b, c].map((n) => `localhost:${n.port}`) },
          logger: false,
        }) as Cluster,
      );
      subscription = subscribeDurably(client, 'shrink', (m) => received.push(m), {
        onReconnect: () => reconnects++,
      });
      await subscription.ready;
    }
    try {
      expect(await onC()).toBe(true);
      // Every slot of C goes to A (no keys, so nothing to migrate); then C is forgotten and reset.
      const ids = (await Promise.all(admins.map((x) => x.call('CLUSTER', 'MYID')))) as string[];
      const ranges = (await adminC.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number]]>;
      const slotsOfC = ranges
        .filter((range) => range[2][1] === c.port)
        .flatMap(([from, to]) => Array.from({ length: to - from + 1 }, (_, i) => from + i));
      for (const admin of admins) {
        const pipeline = admin.pipeline();
        for (const slot of slotsOfC) pipeline.call('CLUSTER', 'SETSLOT', String(slot), 'NODE', ids[0]!);
        await pipeline.exec();
      }
      await adminA.call('CLUSTER', 'BUMPEPOCH');
      await adminA.call('CLUSTER', 'FORGET', ids[2]!);
      await adminB.call('CLUSTER', 'FORGET', ids[2]!);
      await adminC.call('CLUSTER', 'RESET', 'HARD');
      // As when the app's commands get MOVED: the Cluster refreshes its slots (a call made while a
      // refresh runs does nothing, and C, if asked, lists none: so, until it has moved).
      await eventually(
        async () => {
          await new Promise<void>((resolve) => client!.refreshSlotsCache(() => resolve()));
          return reconnects === 1;
        },
        'the subscriber moved',
        8000,
      );
      await publishUntilHeard(
        adminA,
        'shrink',
        'after',
        received,
        'a message published on a node still in the Cluster',
      );
    } finally {
      await subscription?.unsubscribe();
      for (const admin of admins) admin.disconnect();
    }
  });
});
