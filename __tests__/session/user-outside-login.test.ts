import express from 'express';
import type { Redis } from 'ioredis';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { sessionKey } from '../../lib/session/scripts';
import { eventually, useRedisServer } from '../helpers/redis';
import { sessionCookie, sidOf } from './app';

const SECRET = 'review3-secret-review3-secret-review3-000';
const redisServer = useRedisServer();

/** Holds every INDEX_ADD on `redis` until released; `hit` resolves when the first one arrives. */
function gateIndexAdd(redis: Redis) {
  const client = redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const original = client.erk_session_index_add_v3!;
  let release!: () => void;
  const open = new Promise<void>((r) => {
    release = r;
  });
  let hit!: () => void;
  const reached = new Promise<void>((r) => {
    hit = r;
  });
  client.erk_session_index_add_v3 = function (this: unknown, ...args: unknown[]) {
    hit();
    return open.then(() => original.apply(this, args));
  };
  return { reached, release: () => release() };
}

function instance(redis: Redis) {
  const sessions = redisSession({ redis, secret: SECRET, ttl: '1h' });
  const app = express();
  app.use(sessions);
  app.post('/count', (req, res) => {
    const s = req.session as unknown as { views?: number };
    s.views = (s.views ?? 0) + 1;
    res.json({ views: s.views });
  });
  app.post('/login/:user', async (req, res) => {
    await sessions.login(req, { userId: String(req.params.user) });
    res.json({});
  });
  // What passport's req.logIn() does (regenerate, set passport.user, save), then, in its callback,
  // what the README recommends: `req.session.userId = user.id`.
  app.post('/passport-login/:user', (req, res, next) => {
    req.session.regenerate((err) => {
      if (err) return next(err);
      (req.session as unknown as { passport: unknown }).passport = { user: req.params.user };
      req.session.save((err2) => {
        if (err2) return next(err2);
        req.session.userId = String(req.params.user);
        res.json({});
      });
    });
  });
  app.get('/me', (req, res) => res.json({ userId: req.session?.userId ?? null }));
  app.use(sessions.handleErrors);
  return { sessions, app };
}

describe("redisSession: a session that becomes a user's outside login() (passport)", () => {
  it('logoutAll() on another instance while the request is finishing ends it too', async () => {
    const redisA = redisServer.client() as Redis;
    const redisB = redisServer.client() as Redis;
    const a = instance(redisA);
    const b = instance(redisB);
    // Warm-up: defines the index script on A's client.
    await request(a.app).post('/login/warmup').expect(200);

    const agent = request.agent(a.app);
    await agent.post('/count').expect(200);
    const gate = gateIndexAdd(redisA);
    const pending = agent.post('/passport-login/mallory').then((r) => r);
    await gate.reached;
    // Once the session is mallory's in Redis, a logoutAll() must end it. Here it already is while the
    // index write is still held (the store wrote the session first); a store that lists first only
    // writes it after the gate opens.
    const admin = redisServer.plain();
    const mallorys = async () => {
      for (const key of await admin.keys('erk:sess:{*'))
        if ((await admin.hget(key, 'u')) === 'mallory') return true;
      return false;
    };
    const deadline = Date.now() + 300;
    while (!(await mallorys()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    if (!(await mallorys())) {
      gate.release();
      await eventually(mallorys, 'mallory session in Redis');
    }
    const ended = await b.sessions.logoutAll('mallory');
    gate.release();
    const res = await pending;
    expect(res.status).toBe(200);
    const sid = sidOf(sessionCookie(res)!);
    const owner = await admin.hget(sessionKey('erk:', sid), 'u');
    expect({ ended, owner, me: (await agent.get('/me')).body }).toEqual({
      ended: 1,
      owner: null,
      me: { userId: null },
    });
  });
});
