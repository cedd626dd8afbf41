import Redis from 'ioredis';
import { pingRedis } from '../../lib/health';
import { eventually, useRedisCluster } from '../helpers/redis';

// Its own cluster: the test kills a master.
describe('pingRedis on a Cluster', () => {
  const redis = useRedisCluster();

  it('reports ok: false once the Cluster refuses every key (a master down, no replica), though every node still answers PING', async () => {
    const client = redis.client();
    expect(await pingRedis(client)).toMatchObject({ ok: true, mode: 'cluster' });
    await redis.cluster.servers[0]!.kill();
    const admin = redis.track(new Redis(redis.cluster.nodes[1]!));
    await eventually(
      async () => /cluster_state:fail/.test(String(await admin.cluster('INFO'))),
      'cluster_state:fail',
      15_000,
    );
    expect(await admin.ping()).toBe('PONG');
    await expect(client.set('k', '1')).rejects.toThrow();
    const health = await pingRedis(client);
    expect(health).toMatchObject({ ok: false, mode: 'cluster' });
    expect(health.error).toMatch(/cluster_state is fail|CLUSTERDOWN|closed|refused/i);
  }, 40_000);
});
