import express from 'express';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';
import { oneSystemTwice } from './fixtures/one-system-twice';

const SECRET = 'same-system-secret-same-system-secret-00';

// README (Sessions, "Two redisSession() on one Redis"): "The same cookie name mounted twice is one
// system" (shared-index.ts: "the same cookie name is one system mounted twice, and is fine"). A
// common shape: each router module makes its own redisSession() from the same options, and an
// app-wide one runs too (or two routers mounted at '/' each have theirs).
describe('two redisSession() with the same cookie name (one system) on one request path', () => {
  const redis = useRedisServer();

  function build(clients: 'one client' | 'a client each' = 'one client') {
    const shared = redis.plain();
    // Same name 'sid', same prefix, same Redis: one system.
    return oneSystemTwice(shared, clients === 'one client' ? shared : redis.plain());
  }

  it.each(['one client', 'a client each'] as const)(
    'a request through both is served, and a login through the router instance works (%s)',
    async (clients) => {
      const { app, site, errors } = build(clients);
      const agent = request.agent(app);
      const me = await agent.get('/account/me');
      const user = clients === 'one client' ? 'carol' : 'erin';
      const login = await agent.post(`/account/login/${user}`);
      const home = await agent.get('/home');
      expect({ me: me.status, login: login.status, home: home.body, errors }).toEqual({
        me: 200,
        login: 200,
        home: { userId: user },
        errors: [],
      });
      expect(await site.list(user)).toHaveLength(1);
    },
  );
});

describe('one redisSession() instance reached twice (app-wide and in a router)', () => {
  const redis = useRedisServer();
  it('is served and logs in (sanity: not refused)', async () => {
    const sessions = redisSession({ redis: redis.plain(), secret: SECRET, ttl: '1h' });
    const app = express();
    app.use(sessions);
    const router = express.Router();
    router.use(sessions);
    router.post('/login/:user', async (req, res, next) => {
      try {
        await sessions.login(req, { userId: String(req.params.user) });
        res.json({ ok: true });
      } catch (e) {
        next(e);
      }
    });
    app.use('/account', router);
    app.get('/home', (req, res) => res.json({ userId: req.session?.userId ?? null }));
    const agent = request.agent(app);
    await agent.post('/account/login/dave').expect(200);
    expect((await agent.get('/home')).body).toEqual({ userId: 'dave' });
  });
});
