import net from 'node:net';
import Redis from 'ioredis';
import { subscribe } from '../../lib/pubsub';
import { eventually, useRedisCluster } from '../helpers/redis';

// A whole Cluster down: the kit's subscriber must wait between attempts, not spin (ioredis's own
// cluster subscriber picks a new node the moment one refuses, without a pause).
describe('pub/sub through a Redis Cluster that goes away entirely', () => {
  const redis = useRedisCluster();

  it('tries again with backoff while every node is down, and hears its channel once the nodes are back', async () => {
    const client = redis.client({ logger: { warn: () => {} } });
    const received: string[] = [];
    let reconnects = 0;
    const unsubscribe = await subscribe(client, 'outage-feed', (m) => received.push(m), {
      onReconnect: () => reconnects++,
    });
    const connects = jest.spyOn(net.Socket.prototype, 'connect');
    try {
      await Promise.all(redis.cluster.servers.map((s) => s.kill()));
      await new Promise((r) => setTimeout(r, 2000));
      const attempts = connects.mock.calls.length;
      connects.mockRestore();
      // ioredis's cluster subscriber made about 7,000 here; the kit's, with backoff, about 10, next to
      // the Cluster's own reconnect attempts.
      expect(attempts).toBeLessThan(100);
    } finally {
      connects.mockRestore();
    }
    await Promise.all(redis.cluster.servers.map((s) => s.restart()));
    const admin = new Redis(redis.cluster.nodes[0]!);
    try {
      await eventually(
        async () => {
          await admin.publish('outage-feed', 'after').catch(() => 0);
          return received.includes('after');
        },
        'a message once the cluster is back',
        20_000,
      );
      expect(reconnects).toBeGreaterThanOrEqual(1);
    } finally {
      admin.disconnect();
      await unsubscribe();
    }
  }, 60_000);
});
