import { RedisStore } from 'connect-redis';
import express from 'express';
import session from 'express-session';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';

const SECRET = 'migrate-secret-migrate-secret-migrate-0000';

// A migration from express-session + connect-redis, route by route: both in one app for a while.
describe('express-session (connect-redis) and redisSession in one app', () => {
  const redis = useRedisServer();

  function build(legacyMount: '/legacy' | '/') {
    const sessions = redisSession({ redis: redis.plain(), secret: SECRET, ttl: '1h' });
    const app = express();
    app.use(
      legacyMount,
      session({
        store: new RedisStore({ client: redis.plain() }),
        secret: 'legacy-secret',
        resave: false,
        saveUninitialized: false,
      }),
    );
    app.use('/v2', sessions);
    app.post('/legacy/visit', (req, res) => {
      const s = req.session as unknown as { views?: number };
      s.views = (s.views ?? 0) + 1;
      res.json({ views: s.views });
    });
    app.post('/v2/login/:user', async (req, res, next) => {
      try {
        await sessions.login(req, { userId: String(req.params.user) });
        res.json({ ok: true });
      } catch (e) {
        next(e);
      }
    });
    app.get('/v2/me', (req, res) => {
      res.json({ userId: req.session?.userId ?? null });
    });
    app.use(sessions.handleErrors);
    const errors: string[] = [];
    app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      errors.push(error.message);
      res.status(500).json({ error: 'internal' });
    });
    return { app, sessions, errors };
  }

  it('on paths of their own: the default cookie names differ (connect.sid, sid) and each reads its own', async () => {
    const { app, sessions } = build('/legacy');
    const agent = request.agent(app);
    const legacy = await agent.post('/legacy/visit');
    const login = await agent.post('/v2/login/alice');
    const names = [
      ...((legacy.headers['set-cookie'] ?? []) as string[]),
      ...((login.headers['set-cookie'] ?? []) as string[]),
    ].map((c) => c.split('=')[0]);
    expect(names).toEqual(['connect.sid', 'sid']);
    expect((await agent.post('/legacy/visit')).body).toEqual({ views: 2 });
    expect((await agent.get('/v2/me')).body).toEqual({ userId: 'alice' });
    expect(await sessions.list('alice')).toHaveLength(1);
  });

  it('express-session mounted app-wide before it: the request is refused with an error that says so, not a login into a session the browser never presents (which logoutAll() then could not end)', async () => {
    const { app, sessions, errors } = build('/');
    const agent = request.agent(app);
    await agent.post('/legacy/visit');
    const login = await agent.post('/v2/login/bob');
    expect(login.status).toBe(500);
    expect(errors).toEqual([
      expect.stringMatching(/req\.session was set before it by another session middleware/),
    ]);
    expect(await sessions.list('bob')).toEqual([]);
    await sessions.logoutAll('bob');
    const after = await agent.get('/v2/me');
    expect(after.body?.userId ?? null).not.toBe('bob');
  });
});
