import type { Cluster } from 'ioredis';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { sessionKey, userIndexKey } from '../../lib/session/scripts';
import { useRedisCluster } from '../helpers/redis';
import { sessionApp, sessionCookie, sidOf } from '../session/app';

const SECRET = 'cluster-test-secret-cluster-test-secret';

describe('redisSession against a real Redis Cluster', () => {
  const clusterRedis = useRedisCluster();
  let redis: Cluster;

  beforeAll(() => {
    redis = clusterRedis.plain();
  });

  it('logs in, slides the TTL, lists and ends sessions whose keys live on different nodes', async () => {
    const sessions = redisSession({ redis, secret: SECRET, ttl: '1h' });
    const app = sessionApp(sessions);
    const agents = Array.from({ length: 6 }, () => request.agent(app));
    const sids: string[] = [];
    for (const [i, agent] of agents.entries()) {
      await agent.post('/count').expect(200);
      const res = await agent.post('/login/alice').set('User-Agent', `Device/${i}`).expect(200);
      sids.push(sidOf(sessionCookie(res)!));
    }
    // Session keys are spread over the masters; the user index has its own slot.
    const slots = new Set(
      await Promise.all(sids.map((sid) => redis.call('CLUSTER', 'KEYSLOT', sessionKey('erk:', sid)))),
    );
    expect(slots.size).toBeGreaterThan(1);

    const key = sessionKey('erk:', sids[0]!);
    await redis.pexpire(key, 2000);
    expect((await agents[0]!.get('/me').expect(200)).body.userId).toBe('alice');
    expect(await redis.pttl(key)).toBeGreaterThan(60_000);

    const listed = await sessions.list('alice');
    expect(listed.map((s) => s.userAgent).sort()).toEqual(agents.map((_, i) => `Device/${i}`));

    await redis.del(sessionKey('erk:', sids[1]!));
    expect(await sessions.list('alice')).toHaveLength(5);
    // A keyless entry is left out of list() but kept until its score retires it.
    expect(await redis.zcard(userIndexKey('erk:', 'alice'))).toBe(6);

    expect(await sessions.logoutAll('alice')).toBe(5);
    for (const agent of agents) expect((await agent.get('/me').expect(200)).body.userId).toBeNull();
  });

  it('logout works across slots', async () => {
    const sessions = redisSession({ redis, secret: SECRET });
    const agent = request.agent(sessionApp(sessions));
    await agent.post('/login/bob').expect(200);
    await agent.post('/logout').expect(204);
    expect((await agent.get('/me').expect(200)).body.userId).toBeNull();
    expect(await sessions.list('bob')).toEqual([]);
  });
});
