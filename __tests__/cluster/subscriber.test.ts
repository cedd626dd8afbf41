import net from 'node:net';
import Redis, { Cluster } from 'ioredis';
import { subscribeDurably } from '../../lib/pubsub';
import { listen } from '../helpers/pubsub';
import { eventually, useRedisCluster } from '../helpers/redis';

// The kit's own Cluster subscriber: one plain connection to a node, moved only when it ends.
describe('pub/sub through a Redis Cluster', () => {
  const redis = useRedisCluster();

  it('stays on its node when the Cluster only lost its own connections to it (an idle timeout)', async () => {
    const client = redis.client({ logger: { warn: () => {} } });
    const { heard: received, counts, unsubscribe } = await listen(client, 'idle-feed');
    const admins = redis.cluster.nodes.map((n) => new Redis(n));
    try {
      // Redis closes idle command connections (never pub/sub ones); ioredis reports each as '-node'.
      for (const admin of admins) await admin.config('SET', 'timeout', '1');
      await client.get('{a}x');
      await client.get('{b}x');
      await client.get('{c}x');
      await new Promise((r) => setTimeout(r, 2500));
      await admins[0]!.publish('idle-feed', 'still here');
      await eventually(() => received.includes('still here'), 'the message');
      expect(counts.reconnects).toBe(0);
    } finally {
      for (const admin of admins) {
        await admin.config('SET', 'timeout', '0');
        admin.disconnect();
      }
      await unsubscribe();
    }
  });

  it('connects with what a startup node object carries (its own password), before the Cluster has', async () => {
    const admins = redis.cluster.nodes.map((n) => new Redis(n));
    for (const admin of admins) await admin.config('SET', 'requirepass', 'node-pw');
    const client = redis.track(new Cluster(redis.cluster.nodes.map((n) => ({ ...n, password: 'node-pw' }))));
    const errors: unknown[] = [];
    const durable = subscribeDurably(client, 'pw-feed', () => {}, { onError: (e) => errors.push(e) });
    try {
      await durable.ready;
      expect(errors).toEqual([]);
    } finally {
      await durable.unsubscribe();
      for (const admin of admins) {
        await admin.call('CONFIG', 'SET', 'requirepass', '').catch(() => {});
        admin.disconnect();
      }
    }
  });

  it('tries again with backoff while every node is down, and hears its channel once the nodes are back', async () => {
    const client = redis.client({ logger: { warn: () => {} } });
    const { heard: received, counts, unsubscribe } = await listen(client, 'outage-feed');
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
      expect(counts.reconnects).toBeGreaterThanOrEqual(1);
    } finally {
      admin.disconnect();
      await unsubscribe();
    }
  }, 60_000);
});
