import express from 'express';
import type { Redis } from 'ioredis';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { sessionKey } from '../../lib/session/scripts';
import { useRedisServer } from '../helpers/redis';
import { sessionCookie, sidOf } from './app';

const SECRET = 'mid-request-save-secret-mid-request-save';
const redisServer = useRedisServer();
const DAY = 24 * 3600_000;

type Data = { busy?: boolean; views?: number; theme?: string };

function saved(req: express.Request): Promise<void> {
  return new Promise((resolve, reject) => req.session.save((e) => (e ? reject(e) : resolve())));
}

describe("redisSession and a handler's own save() before the end of the request", () => {
  // A double-submit guard: the mark is saved at once (another tab sees it), then cleared.
  it.each([true, false])(
    'stores the data as the request left it when a mark saved mid-request is cleared before the end (rolling: %p)',
    async (rolling) => {
      const redis = redisServer.client() as Redis;
      const prefix = `mid${rolling ? 1 : 0}:`;
      const sessions = redisSession({ redis, secret: SECRET, ttl: '1h', rolling, prefix });
      const app = express();
      app.use(sessions);
      app.post('/login', async (req, res) => {
        await sessions.login(req, { userId: 'u1' });
        if (req.query.guard) {
          (req.session as unknown as Data).busy = true;
          await saved(req);
          delete (req.session as unknown as Data).busy;
        }
        res.json({});
      });
      app.post('/count', (req, res) => {
        const s = req.session as unknown as Data;
        s.views = (s.views ?? 0) + 1;
        res.json({});
      });
      app.post('/work', async (req, res) => {
        const s = req.session as unknown as Data;
        s.busy = true;
        await saved(req);
        delete s.busy;
        res.json({});
      });
      app.get('/me', (req, res) => res.json({ busy: (req.session as unknown as Data).busy ?? false }));
      const agent = request.agent(app);
      const cookie = sessionCookie(await agent.post('/count').expect(200))!;
      await agent.post('/work').expect(200);
      const stored = JSON.parse((await redis.hget(sessionKey(prefix, sidOf(cookie)), 'd'))!);
      expect(stored.busy).toBeUndefined();
      expect(stored.views).toBe(1);
      expect((await agent.get('/me').expect(200)).body).toEqual({ busy: false });
      // The same on a login's new session.
      const login = sessionCookie(await agent.post('/login?guard=1').expect(200))!;
      const afterLogin = JSON.parse((await redis.hget(sessionKey(prefix, sidOf(login)), 'd'))!);
      expect(afterLogin.userId).toBe('u1');
      expect(afterLogin.busy).toBeUndefined();
    },
  );

  it('rolling: false — a change saved mid-request, then "remember me": the key lives as long as the cookie sent', async () => {
    const redis = redisServer.client() as Redis;
    const sessions = redisSession({ redis, secret: SECRET, ttl: '1h', rolling: false });
    const app = express();
    app.use(sessions);
    app.post('/login', async (req, res) => {
      await sessions.login(req, { userId: 'u1' });
      res.json({});
    });
    app.post('/prefs', async (req, res) => {
      (req.session as unknown as Data).theme = 'dark';
      await saved(req);
      req.session.cookie.maxAge = 30 * DAY;
      res.json({});
    });
    const agent = request.agent(app);
    const cookie = sessionCookie(await agent.post('/login').expect(200))!;
    const sent = sessionCookie(await agent.post('/prefs').expect(200));
    expect(sent).toBeDefined();
    const cookieMs = Date.parse(/Expires=([^;]+)/.exec(sent!)![1]!) - Date.now();
    const keyMs = await redis.pttl(sessionKey('erk:', sidOf(cookie)));
    expect({ cookieDays: Math.round(cookieMs / DAY), keyDays: Math.round(keyMs / DAY) }).toEqual({
      cookieDays: 30,
      keyDays: 30,
    });
  });
});
