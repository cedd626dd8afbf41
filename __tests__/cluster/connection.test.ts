import Redis, { Cluster, type ClusterNode } from 'ioredis';
import { connectRedis, createRedis } from '../../lib/connection';
import { pingRedis } from '../../lib/health';
import { subscribe } from '../../lib/pubsub';
import { defineScript, runScript } from '../../lib/scripts';
import { connectAgainAndHear, listen, publishUntilHeard } from '../helpers/pubsub';
import { eventually, useRedisCluster } from '../helpers/redis';

const pair = defineScript(
  'test_cluster_pair',
  2,
  "redis.call('SET', KEYS[1], ARGV[1], 'PX', 10000); redis.call('SET', KEYS[2], ARGV[1], 'PX', 10000); return redis.call('GET', KEYS[2])",
);

describe('createRedis against a real Redis Cluster', () => {
  const redis = useRedisCluster();

  it('builds a Cluster client from cluster.nodes, with the prefix and timeout applied', async () => {
    const client = redis.client({ keyPrefix: 'app:' });
    expect(client.isCluster).toBe(true);
    for (let i = 0; i < 30; i++) await client.set(`k${i}`, String(i));
    expect(await client.get('k7')).toBe('7');
    expect(client.options.redisOptions?.commandTimeout).toBe(500);
    // Off on a Cluster (see resharded-slot.test.ts); on when asked for.
    expect(client.options.enableAutoPipelining).toBe(false);
    expect(redis.client({ enableAutoPipelining: true }).options.enableAutoPipelining).toBe(true);
    expect(await pingRedis(client)).toMatchObject({ ok: true, mode: 'cluster' });
    // Keys really are spread over the masters.
    const sizes = await Promise.all(client.nodes('master').map((n) => n.dbsize()));
    expect(sizes.filter((s) => s > 0).length).toBeGreaterThan(1);
  });

  it('takes a top-level lazyConnect for the Cluster: nothing connects before the first command', async () => {
    const client = redis.client({ lazyConnect: true }) as Cluster;
    await new Promise((r) => setTimeout(r, 200));
    expect(client.status).toBe('wait');
    expect(await client.ping()).toBe('PONG');
    expect(client.status).toBe('ready');
  });

  it('reads REDIS_CLUSTER_NODES when no url is given', async () => {
    process.env.REDIS_CLUSTER_NODES = redis.cluster.addresses.join(',');
    try {
      const client = redis.track(createRedis()) as Cluster;
      expect(client.isCluster).toBe(true);
      expect(await client.ping()).toBe('PONG');
    } finally {
      delete process.env.REDIS_CLUSTER_NODES;
    }
  });

  it('connects with startup nodes given as redis:// URLs, and never shows their password when they cannot be reached', async () => {
    const port = redis.cluster.nodes[0]!.port;
    const client = redis.track(
      createRedis({ cluster: { nodes: [`redis://127.0.0.1:${port}`] }, logger: false }),
    );
    expect(await client.ping()).toBe('PONG');
    await client.set('url-node', '1');
    expect(await client.get('url-node')).toBe('1');
    // No such node: the error names it masked (the host was "redis://:s3cret@127.0.0.1", in a DNS error).
    const error = await connectRedis({
      cluster: { nodes: [`redis://:s3cret@127.0.0.1:${port + 1000}`] },
      connectTimeout: 300,
      logger: false,
    }).then(
      (c) => void redis.track(c),
      (e: Error) => e,
    );
    expect(error?.message).toMatch(/cannot reach Redis/);
    expect(error?.message).not.toContain('s3cret');
  });

  it('runs a multi-key script whose keys share a hash tag', async () => {
    const client = redis.client();
    expect(await runScript(client, pair, ['a:{same}', 'b:{same}'], ['v'])).toBe('v');
  });
  it('tells subscribers when the node their subscription runs on drops it (ioredis moves it without an event)', async () => {
    const client = redis.plain();
    const { heard: received, counts, unsubscribe } = await listen(client, 'cluster-feed');
    const admins = redis.cluster.nodes.map((n) => new Redis(n.port, n.host));
    try {
      // Only on the node it is on: killed there, it may reconnect to a node a loop would reach next.
      const lists = await Promise.all(admins.map((admin) => admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub')));
      const on = admins.filter((_admin, i) => String(lists[i]).trim() !== '');
      expect(on).toHaveLength(1);
      expect(Number(await on[0]!.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))).toBe(1);
      await eventually(() => counts.reconnects === 1, 'the reconnect hook');
      await publishUntilHeard(admins[0]!, 'cluster-feed', 'after', received, 'a message after the drop');
    } finally {
      await unsubscribe();
      for (const admin of admins) admin.disconnect();
    }
  });
  it('hears its channels again when the app disconnects its Cluster client and connects it again', async () => {
    const client = redis.plain();
    const subscribed = await listen(client, 'cluster-again');
    const publisher = redis.plain();
    try {
      // A Cluster's status reads 'close' again after its 'end' (ioredis): the event is what counts.
      const ended = new Promise((resolve) => client.once('end', resolve));
      client.disconnect();
      await ended;
      await connectAgainAndHear(client, publisher, 'cluster-again', subscribed);
    } finally {
      await subscribed.unsubscribe();
    }
  });
  it.each<[string, (n: { host: string; port: number }) => ClusterNode]>([
    ['{ host, port }', (n: { host: string; port: number }) => n],
    ['host:port', (n: { host: string; port: number }) => `${n.host}:${n.port}`],
    ['redis://host:port', (n: { host: string; port: number }) => `redis://${n.host}:${n.port}`],
    ['a port', (n: { host: string; port: number }) => n.port],
  ])(
    'subscribes through a Cluster given its startup nodes as %s, before it has connected',
    async (_form, as) => {
      const client = redis.track(new Cluster(redis.cluster.nodes.map(as)));
      const received: string[] = [];
      const unsubscribe = await subscribe(client, 'cluster-startup', (m) => received.push(m));
      const publisher = redis.plain();
      try {
        await publishUntilHeard(publisher, 'cluster-startup', 'hello', received, 'a message');
      } finally {
        await unsubscribe();
      }
    },
  );
});
