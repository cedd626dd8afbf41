import calculateSlot from 'cluster-key-slot';
import type { Cluster } from 'ioredis';
import { rateLimit } from '../../lib/rate-limit';
import { useRedisCluster } from '../helpers/redis';
import { callLimiter as call, countWrites, deniedHandler } from '../rate-limit/fixtures/direct';

describe('rateLimit on an auto-pipelining Cluster: a turn of decisions at once, in order', () => {
  const cluster = useRedisCluster();

  it('sends the decisions of several clients served by one master in one write', async () => {
    const redis = cluster.client({ enableAutoPipelining: true }) as Cluster;
    await redis.ping();
    const master = redis.slots[calculateSlot('{c0}')]![0]!;
    const names: string[] = [];
    for (let i = 0; names.length < 3; i++) {
      if (redis.slots[calculateSlot(`{c${i}}`)]![0] === master) names.push(`c${i}`);
    }
    let next = 0;
    const limiter = rateLimit({
      redis,
      limit: 10,
      window: '1m',
      key: () => names[next++ % 3]!,
      timeout: 2000,
    });
    await Promise.all([call(limiter), call(limiter), call(limiter)]); // loads the script
    const node = redis.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === master)!;
    const counted = countWrites(node.stream);
    try {
      expect(await Promise.all([call(limiter), call(limiter), call(limiter)])).toEqual([
        'allowed',
        'allowed',
        'allowed',
      ]);
      expect(counted.writes).toEqual([3]);
    } finally {
      counted.restore();
    }
  });

  it('a reset() made just before a request, while the client still loads its slot map, reaches Redis first', async () => {
    const options = {
      limit: 1,
      window: '1h',
      algorithm: 'fixed-window' as const,
      timeout: 5000,
      key: () => 'startup',
      handler: deniedHandler,
    };
    // Another app instance used up the client's quota.
    const other = cluster.client();
    await other.ping();
    const used = rateLimit({ ...options, redis: other });
    expect([await call(used), await call(used)]).toEqual(['allowed', 'denied']);
    // This instance has just started.
    const limiter = rateLimit({ ...options, redis: cluster.client({ enableAutoPipelining: true }) });
    const reset = limiter.reset('startup');
    const first = call(limiter);
    expect(await first).toBe('allowed');
    await reset;
    // Counted after the reset, and no stale denial remembered in the deny cache.
    expect((await limiter.get('startup')).remaining).toBe(0);
    expect(await call(limiter)).toBe('denied');
    await limiter.reset('startup');
    expect(await call(limiter)).toBe('allowed');
  });
});
