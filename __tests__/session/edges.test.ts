import express from 'express';
import { Redis } from 'ioredis';
import request from 'supertest';
import { type KitEvent, onKitEvent } from '../../lib/events';
import { redisSession } from '../../lib/session';
import { sessionHandle, sessionKey, userIndexKey } from '../../lib/session/scripts';
import { useRedisServer } from '../helpers/redis';
import { commandsDuring, sessionCookie, sidOf } from './app';

const SECRET = 'edges-test-secret-edges-test-secret-0001';
const WEEK = 7 * 24 * 3600_000;
const redisServer = useRedisServer();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let tests = 0;

/** Each test gets its own key prefix: the server is shared by the whole file. */
function setup(extra: Partial<Parameters<typeof redisSession>[0]> = {}) {
  const redis = redisServer.client() as Redis;
  const prefix = `edge${++tests}:`;
  const sessions = redisSession({ redis, secret: SECRET, ttl: '1h', prefix, ...extra });
  const app = express();
  app.use(sessions);
  const data = (req: express.Request) => req.session as unknown as Record<string, unknown>;
  app.post('/login', async (req, res) => {
    await sessions.login(req, { userId: 'u' });
    if (req.query.maxAge) req.session.cookie.maxAge = Number(req.query.maxAge);
    res.json({ id: sessions.idOf(req) });
  });
  app.get('/me', (req, res) =>
    res.json({ userId: req.session?.userId ?? null, note: data(req).note ?? null }),
  );
  app.post('/note', (req, res) => {
    data(req).note = req.query.note;
    res.json({});
  });
  app.post('/bigint', (req, res) => {
    data(req).n = 10n;
    res.json({ ok: true });
  });
  app.post('/cycle', (req, res) => {
    const o: Record<string, unknown> = {};
    o.self = o;
    data(req).o = o;
    res.json({ ok: true });
  });
  app.post('/switch', async (req, res) => {
    await sessions.logout(req, res);
    await sessions.login(req, { userId: 'other' });
    res.json({ id: sessions.idOf(req) });
  });
  app.post('/remember-only', (req, res) => {
    req.session.cookie.maxAge = WEEK;
    res.status(401).json({});
  });
  app.post('/remember-streamed', (req, res) => {
    req.session.cookie.maxAge = WEEK;
    res.write('a');
    res.end('b');
  });
  app.get('/drift', (req, res) => {
    // What express-session's touch() does when the clock ticks between its two Date.now() reads.
    (req.session.cookie.originalMaxAge as number) -= 1;
    res.write('a');
    res.end('b');
  });
  app.post('/save-then-redirect', (req, res) => {
    data(req).note = 'saved';
    req.session.save(() => res.redirect(303, '/me'));
  });
  app.post('/remember-save', (req, res) => {
    req.session.cookie.maxAge = WEEK;
    req.session.save(() => res.json({}));
  });
  let gate: Promise<void> = Promise.resolve();
  let entered = () => {};
  app.post('/slow-note', async (req, res) => {
    entered();
    await gate;
    data(req).note = 'late';
    res.json({});
  });
  const hold = () => {
    let release = () => {};
    gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const inside = new Promise<void>((resolve) => {
      entered = resolve;
    });
    return { release, inside };
  };
  app.post('/logout', async (req, res) => {
    await sessions.logout(req, res);
    res.status(204).end();
  });
  app.post('/logout-without-res', async (req, res) => {
    try {
      await sessions.logout(req, undefined as never);
      res.status(204).end();
    } catch (error) {
      res.status(400).json({ error: (error as Error).message });
    }
  });
  app.use(sessions.handleErrors);
  const loggedIn = async (query = '') => {
    const agent = request.agent(app);
    const cookie = sessionCookie(await agent.post(`/login${query}`).expect(200))!;
    return { agent, cookie, key: sessionKey(prefix, sidOf(cookie)) };
  };
  return { redis, sessions, app, prefix, loggedIn, hold };
}

describe('redisSession edge cases', () => {
  it.each([
    ['a BigInt', '/bigint'],
    ['a cycle', '/cycle'],
  ])(
    'a session value JSON cannot encode (%s) gets a 500 problem, not a hang, and the stored session is kept',
    async (_what, path) => {
      const { redis, loggedIn } = setup();
      const { agent, key } = await loggedIn();
      await agent.post('/note?note=kept').expect(200);
      const before = await redis.hget(key, 'd');
      const res = await agent.post(path).timeout(3000);
      expect(res.status).toBe(500);
      expect(res.body).toMatchObject({ type: 'urn:express-redis-kit:problem:session-error', status: 500 });
      expect(await redis.hget(key, 'd')).toBe(before);
      expect((await agent.get('/me').expect(200)).body).toEqual({ userId: 'u', note: 'kept' });
    },
  );

  it.each([
    ['not an object', '42'],
    ['an object without a cookie', '{"userId":"u"}'],
    ['an array', '[1,2]'],
    ['a cookie with a lifetime that is not a number', '{"cookie":{"originalMaxAge":"x"},"userId":"u"}'],
    [
      'a cookie with an expiry that is not a date',
      '{"cookie":{"originalMaxAge":1000,"expires":"soon"},"userId":"u"}',
    ],
  ])(
    'a stored value that is %s reads as no session (event "corrupt"), not a 500 on every request',
    async (_what, stored) => {
      const { redis, loggedIn } = setup();
      const { agent, key } = await loggedIn();
      await redis.hset(key, 'd', stored);
      const events: KitEvent[] = [];
      const off = onKitEvent((e) => {
        if (e.component === 'session') events.push(e);
      });
      try {
        expect((await agent.get('/me').timeout(3000).expect(200)).body).toEqual({ userId: null, note: null });
      } finally {
        off();
      }
      expect(events.map((e) => e.type)).toContain('corrupt');
    },
  );

  it('logout() then login() in one request switches user: the old session is gone, the new one works', async () => {
    const { redis, sessions, loggedIn } = setup();
    const { agent, key } = await loggedIn();
    const res = await agent.post('/switch').expect(200);
    // The clearing cookie, then the new session's: the browser keeps the last.
    const cookies = (res.headers['set-cookie'] as unknown as string[]).filter((c) => c.startsWith('sid='));
    expect(cookies).toHaveLength(2);
    expect(cookies[0]).toMatch(/Expires=Thu, 01 Jan 1970/);
    const cookie = cookies[1]!;
    expect(cookie).not.toMatch(/Expires=Thu, 01 Jan 1970/);
    expect(res.body.id).toBe(sessionHandle(sidOf(cookie)));
    expect(await redis.hget(key, 'd')).toBeNull();
    expect((await agent.get('/me').expect(200)).body.userId).toBe('other');
    expect(await sessions.list('u')).toEqual([]);
    expect(await sessions.list('other')).toHaveLength(1);
  });

  it('a visitor whose handler only sets cookie.maxAge gets neither a cookie nor a Redis key', async () => {
    const { redis, app, prefix } = setup();
    const res = await request(app).post('/remember-only').expect(401);
    expect(sessionCookie(res)).toBeUndefined();
    expect(await redis.keys(`${prefix}*`)).toEqual([]);
  });

  it('"remember me" set by a streaming handler reaches Redis, and the next request still costs one command', async () => {
    const { redis, loggedIn } = setup();
    const { agent, key } = await loggedIn();
    const streamed = await agent.post('/remember-streamed').expect(200);
    expect(streamed.text).toBe('ab');
    expect(await redis.pttl(key)).toBeGreaterThan(WEEK - 60_000);
    const { commands } = await commandsDuring(redis, () => agent.get('/me').expect(200));
    expect(commands).toBe(1);
    expect(await redis.pttl(key)).toBeGreaterThan(WEEK - 60_000);
  });

  it('a lifetime a millisecond short (express-session clock noise) is not a new lifetime: still one command', async () => {
    const { redis, loggedIn } = setup();
    const { agent } = await loggedIn();
    await agent.get('/me').expect(200);
    const { commands } = await commandsDuring(redis, () => agent.get('/drift').expect(200));
    expect(commands).toBe(1);
  });

  it("a handler's own session.save() before a redirect is not written a second time at the end", async () => {
    const { redis, loggedIn } = setup();
    const { agent } = await loggedIn();
    await agent.get('/me').expect(200);
    const { commands } = await commandsDuring(redis, () => agent.post('/save-then-redirect').expect(303));
    expect(commands).toBe(2); // read + slide, then the save
    expect((await agent.get('/me').expect(200)).body.note).toBe('saved');
  });

  it('with rolling: false a request does not extend the session in Redis, so the key ends with its cookie', async () => {
    const { redis, loggedIn } = setup({ rolling: false });
    const { agent, key } = await loggedIn();
    await redis.pexpire(key, 5000); // as if the cookie had 5 s left
    const { value: res, commands } = await commandsDuring(redis, () => agent.get('/me').expect(200));
    expect(res.body.userId).toBe('u');
    expect(sessionCookie(res)).toBeUndefined();
    expect(commands).toBe(1);
    expect(await redis.pttl(key)).toBeLessThanOrEqual(5000);
    // A change re-sends the cookie with a full lifetime, and Redis gets the same.
    const changed = await agent.post('/note?note=x').expect(200);
    expect(sessionCookie(changed)).toBeDefined();
    expect(await redis.pttl(key)).toBeGreaterThan(3_500_000);
  });

  it('with rolling: false, an explicit save() of a new lifetime alone sends no cookie, so Redis keeps the old expiry', async () => {
    const { redis, loggedIn } = setup({ rolling: false });
    const { agent, key } = await loggedIn();
    const res = await agent.post('/remember-save').expect(200);
    expect(sessionCookie(res)).toBeUndefined();
    expect(await redis.pttl(key)).toBeLessThanOrEqual(3600_000);
  });

  it('with rolling: false, a lost user-index claim is made again by the next read, so logoutAll still finds the session', async () => {
    const { redis, sessions, prefix, loggedIn } = setup({ rolling: false });
    const { agent } = await loggedIn();
    // What a save that timed out after landing leaves: its claim dropped, its index write never made.
    await redis.del(userIndexKey(prefix, 'u'));
    for (const key of await redis.keys(`${prefix}sess:*`)) await redis.hdel(key, 'ix');
    expect((await agent.get('/me').expect(200)).body.userId).toBe('u');
    expect(await sessions.list('u')).toHaveLength(1);
    expect(await sessions.logoutAll('u')).toBe(1);
    expect((await agent.get('/me').expect(200)).body.userId).toBeNull();
  });

  it('a request that outlives a logout answers without putting the dead session cookie back', async () => {
    const { redis, loggedIn, hold } = setup();
    const { agent, key } = await loggedIn();
    const { release, inside } = hold();
    const slow = agent.post('/slow-note').then((r) => r);
    await inside;
    const out = await agent.post('/logout').expect(204);
    expect(sessionCookie(out)).toMatch(/Expires=Thu, 01 Jan 1970/);
    release();
    const late = await slow;
    expect(late.status).toBe(200);
    expect(sessionCookie(late)).toBeUndefined();
    expect(await redis.hget(key, 'd')).toBeNull();
  });

  it('with rolling: false, "remember me" at login gives cookie and Redis the same lifetime', async () => {
    const { redis, loggedIn } = setup({ rolling: false });
    const { cookie, key } = await loggedIn(`?maxAge=${WEEK}`);
    const expires = Date.parse(/Expires=([^;]+)/.exec(cookie)![1]!);
    expect(expires - Date.now()).toBeGreaterThan(WEEK - 60_000);
    expect(await redis.pttl(key)).toBeGreaterThan(WEEK - 60_000);
  });

  /**
   * A logged-in session whose user-index entry runs out `inMs` from now (as about ttl after its last
   * index write), then a read that claims the refresh while Redis holds writes: the client gets 503
   * and the read lands after its claim was dropped.
   */
  async function claimLostAfter(
    inMs: number,
    before: (key: string, now: number) => Promise<unknown> = async () => {},
  ) {
    const context = setup({ timeout: '200ms' });
    const { redis, prefix, loggedIn } = context;
    redis.on('error', () => {});
    const { agent, cookie, key } = await loggedIn();
    const [seconds, micros] = await redis.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    await redis.hset(key, 'ix', String(now + inMs));
    await redis.zadd(userIndexKey(prefix, 'u'), String(now + inMs), sessionHandle(sidOf(cookie)));
    await before(key, now);
    const pauser = new Redis(redisServer.server.url);
    try {
      await pauser.call('CLIENT', 'PAUSE', '600', 'WRITE');
      expect((await agent.get('/me')).status).toBe(503);
    } finally {
      pauser.disconnect();
    }
    return { ...context, agent, key };
  }

  it('a read that times out after claiming the user-index refresh leaves the claim to the next request', async () => {
    const { sessions, agent } = await claimLostAfter(2000);
    await sleep(700); // the pause ends, the late read lands: its claim is dropped
    expect((await agent.get('/me').expect(200)).body.userId).toBe('u');
    await sleep(1500); // the old index entry runs out; the one the last read claimed stays
    expect(await sessions.list('u')).toHaveLength(1);
    expect(await sessions.logoutAll('u')).toBe(1);
    expect((await agent.get('/me').expect(200)).body.userId).toBeNull();
  });

  it('a read that times out after claiming the user-index refresh does not let an idle copy of the cookie outlive logoutAll', async () => {
    const { sessions, agent } = await claimLostAfter(1500);
    await sleep(2000); // the late read lands and slides the session; the index entry runs out
    // Nobody used the cookie since: the session must not be alive where logoutAll cannot see it.
    await sessions.logoutAll('u');
    expect((await agent.get('/me').expect(200)).body.userId).toBeNull();
  });

  it('a read that times out without claiming leaves the session its full lifetime (an earlier claim is not undone)', async () => {
    const hour = 3600_000;
    // The index vouches for two hours: no claim is due. What an earlier claim recorded ends sooner.
    const { redis, agent, key } = await claimLostAfter(2 * hour, (key, now) =>
      redisServer.plain().hset(key, 'ixp', String(now + 800), 'ixc', 'an-earlier-call'),
    );
    await sleep(1000); // the late read lands, claims nothing, and is followed by the forget
    expect(await redis.pttl(key)).toBeGreaterThan(hour - 60_000);
    expect((await agent.get('/me').expect(200)).body.userId).toBe('u');
  });

  it('logout(req) without the response rejects with a TypeError and leaves the session alive', async () => {
    const { loggedIn } = setup();
    const { agent } = await loggedIn();
    const res = await agent.post('/logout-without-res').expect(400);
    expect(res.body.error).toBe(
      'express-redis-kit: sessions.logout(req, res) needs the response, to clear the cookie.',
    );
    expect((await agent.get('/me').expect(200)).body).toEqual({ userId: 'u', note: null });
  });

  it('cookie.secure: true on plain HTTP: login warns once that no cookie is sent; over trusted HTTPS it does not', async () => {
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      const https = setup({ cookie: { secure: true }, proxy: true });
      const set = await request(https.app).post('/login').set('X-Forwarded-Proto', 'https').expect(200);
      expect(sessionCookie(set)).toMatch(/; Secure/);
      expect(warn).not.toHaveBeenCalled();
      const plain = setup({ cookie: { secure: true } });
      for (let i = 0; i < 2; i++) {
        const res = await request(plain.app).post('/login').expect(200);
        expect(sessionCookie(res)).toBeUndefined();
      }
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0]![0]).toMatch(
        /cookie\.secure is true, but this login came over plain HTTP.*trust proxy/,
      );
      expect(warn.mock.calls[0]![1]).toEqual({ code: 'ERK_SESSION_COOKIE_NOT_SENT' });
    } finally {
      warn.mockRestore();
    }
  });

  it.each([
    [
      { name: '__Host-sid' },
      '__Host-sid',
      /cookie name "__Host-sid" starts with __Host-.*without the prefix/,
    ],
    [{ name: '__Secure-sid' }, '__Secure-sid', /cookie name "__Secure-sid" starts with __Secure-/],
    [{ cookie: { sameSite: 'none' as const } }, 'sid', /sameSite is 'none'.*use sameSite: 'lax'/],
    [{ cookie: { sameSite: 'None' as 'none' } }, 'sid', /sameSite is 'none'/],
    [{ cookie: { partitioned: true } }, 'sid', /partitioned is true.*drop partitioned/],
  ])(
    "secure: 'auto' with %p on plain HTTP: login warns once that the browser drops the cookie it gets",
    async (options, name, message) => {
      const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
      try {
        const https = setup({ ...options, proxy: true });
        const set = await request(https.app).post('/login').set('X-Forwarded-Proto', 'https').expect(200);
        expect(sessionCookie(set, name)).toMatch(/; Secure/);
        expect(warn).not.toHaveBeenCalled();
        const plain = setup(options);
        for (let i = 0; i < 2; i++) {
          const res = await request(plain.app).post('/login').expect(200);
          // Sent, but without Secure: a browser refuses it.
          expect(sessionCookie(res, name)).not.toMatch(/; Secure/);
        }
        expect(warn).toHaveBeenCalledTimes(1);
        expect(warn.mock.calls[0]![0]).toMatch(message);
        expect(warn.mock.calls[0]![0]).toMatch(/came over plain HTTP.*trust proxy/);
        expect(warn.mock.calls[0]![1]).toEqual({ code: 'ERK_SESSION_COOKIE_NOT_SENT' });
      } finally {
        warn.mockRestore();
      }
    },
  );

  it("secure: 'auto' with a plain name on plain HTTP logs in without a warning", async () => {
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      const { app } = setup();
      const agent = request.agent(app);
      await agent.post('/login').expect(200);
      expect((await agent.get('/me').expect(200)).body.userId).toBe('u');
      expect(warn).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
    }
  });

  it('logout behind a proxy trusted by the proxy option clears the cookie with the Secure flag it was set with', async () => {
    const { app } = setup({ proxy: true, name: '__Host-sid' });
    const set = sessionCookie(
      await request(app).post('/login').set('X-Forwarded-Proto', 'https').expect(200),
      '__Host-sid',
    )!;
    expect(set).toMatch(/; Secure/);
    const cleared = sessionCookie(
      await request(app)
        .post('/logout')
        .set('X-Forwarded-Proto', 'https')
        .set('Cookie', set.split(';')[0]!)
        .expect(204),
      '__Host-sid',
    );
    expect(cleared).toMatch(/Expires=Thu, 01 Jan 1970/);
    expect(cleared).toMatch(/; Secure/);
  });
});
