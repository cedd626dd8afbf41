import express from 'express';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';

const SECRET = 'same-system-secret-same-system-secret-00';

/** Calls Redis served since the last reset (every command, scripts included). */
async function calls(admin: import('ioredis').default): Promise<number> {
  const info = await admin.info('commandstats');
  let total = 0;
  for (const m of info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) {
    if (!['info', 'config'].includes(m[1]!)) total += Number(m[2]);
  }
  return total;
}

// README (Sessions): two redisSession() made from the same options may both be on a request's path
// (an app-wide one, one a router makes to call login()). A login through the router's instance
// should cost what a login through the app-wide one costs: the new session written once.
describe('login through the second instance of one system', () => {
  const redis = useRedisServer();
  it('writes the new session as often as a login through the instance that loaded it', async () => {
    const admin = redis.plain();
    const shared = redis.plain();
    const opts = { secret: SECRET, ttl: '1h' } as const;
    const site = redisSession({ ...opts, redis: shared });
    const account = redisSession({ ...opts, redis: shared });
    const app = express();
    app.use(site);
    const router = express.Router();
    router.use(account);
    for (const [path, via] of [
      ['/login-site', site],
      ['/login-account', account],
    ] as const) {
      router.post(`${path}/:user`, async (req, res, next) => {
        try {
          await via.login(req, { userId: String(req.params.user) });
          res.json({ ok: true });
        } catch (e) {
          next(e);
        }
      });
    }
    app.use('/account', router);
    const cost = async (path: string, user: string) => {
      const agent = request.agent(app);
      await agent.get('/account/none'); // no session yet: nothing written
      await agent.post(`/account${path}/${user}`).expect(200); // first login: a new session
      await admin.config('RESETSTAT');
      await agent.post(`/account${path}/${user}`).expect(200); // login again over the loaded one
      return calls(admin);
    };
    const viaSite = await cost('/login-site', 'ann');
    const viaAccount = await cost('/login-account', 'bob');
    expect({ viaAccount }).toEqual({ viaAccount: viaSite });
  });
});
