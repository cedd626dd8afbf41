import express from 'express';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { useRedisCluster } from '../helpers/redis';

const SECRET = 'same-system-secret-same-system-secret-00';

// README: "two redisSession() made from the same options (one app-wide, one a router makes to call
// login()) may both be on a request's path". Works with a plain client each (same-system-twice.test.ts);
// here the same with a Cluster client each (a createRedis() per module, as the README's examples do).
describe('one system on a Cluster, a client each', () => {
  const cluster = useRedisCluster();
  it('a request through both is served, and login through the router instance works', async () => {
    const opts = { secret: SECRET, ttl: '1h' } as const;
    const site = redisSession({ ...opts, redis: cluster.client() });
    const account = redisSession({ ...opts, redis: cluster.client() });
    const app = express();
    app.use(site);
    const router = express.Router();
    router.use(account);
    router.post('/login/:user', async (req, res, next) => {
      try {
        await account.login(req, { userId: String(req.params.user) });
        res.json({ ok: true });
      } catch (e) {
        next(e);
      }
    });
    router.get('/me', (req, res) => res.json({ userId: req.session?.userId ?? null }));
    app.use('/account', router);
    const errors: string[] = [];
    app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      errors.push(error.message);
      res.status(500).json({ error: error.message });
    });
    const agent = request.agent(app);
    const login = await agent.post('/account/login/zed');
    const me = await agent.get('/account/me');
    expect({ login: login.status, me: me.status, errors }).toEqual({ login: 200, me: 200, errors: [] });
  });
});
