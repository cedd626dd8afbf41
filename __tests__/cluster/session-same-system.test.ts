import request from 'supertest';
import { useRedisCluster } from '../helpers/redis';
import { oneSystemTwice } from '../session/fixtures/one-system-twice';

// README: "two redisSession() made from the same options (one app-wide, one a router makes to call
// login()) may both be on a request's path". Works with a plain client each (same-system-twice.test.ts);
// here the same with a Cluster client each (a createRedis() per module, as the README's examples do).
describe('one system on a Cluster, a client each', () => {
  const cluster = useRedisCluster();
  it('a request through both is served, and login through the router instance works', async () => {
    const { app, errors } = oneSystemTwice(cluster.client(), cluster.client());
    const agent = request.agent(app);
    const login = await agent.post('/account/login/zed');
    const me = await agent.get('/account/me');
    expect({ login: login.status, me: me.status, errors }).toEqual({ login: 200, me: 200, errors: [] });
  });
});
