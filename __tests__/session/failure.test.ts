import compression from 'compression';
import Redis from 'ioredis';
import request from 'supertest';
import { configureBreaker } from '../../lib/breaker';
import { redisSession } from '../../lib/session';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { sessionApp, sessionCookie } from './app';

const SECRET = 'failure-test-secret-failure-test-secret';
const redisServer = useRedisServer();

/** A user's own plain client (ioredis defaults: offline queue, 20 retries): only guarded() bounds the wait. */
function setup(beforeWrite?: () => Promise<void>, mount: Parameters<typeof sessionApp>[1] = {}) {
  const redis = redisServer.plain();
  redis.on('error', () => {});
  configureBreaker(redis, { cooldownMs: 100 });
  const sessions = redisSession({ redis, secret: SECRET, timeout: '300ms' });
  return { redis, sessions, app: sessionApp(sessions, { beforeWrite, ...mount }) };
}

function expectProblem503(res: request.Response) {
  expect(res.status).toBe(503);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.headers['retry-after']).toBe('1');
  expect(res.body).toMatchObject({
    status: 503,
    type: 'urn:express-redis-kit:problem:session-store-unavailable',
  });
  expect(res.text).not.toMatch(/\n\s+at /);
  // Never a replacement session: no new cookie.
  expect(sessionCookie(res)).toBeUndefined();
}

async function readyAgain(redis: Redis) {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve) => redis.once('ready', () => resolve()));
}

describe('redisSession when Redis is down or slow', () => {
  it('answers 503 problem+json when the server is killed — for logged-in users, new writes and logins', async () => {
    const { redis, app } = setup();
    const { events, stop } = captureEvents('session');
    const agent = request.agent(app);
    try {
      await agent.post('/login/1').expect(200);
      await redisServer.server.kill();

      expectProblem503(await agent.get('/me'));
      expectProblem503(await request(app).post('/count'));
      expectProblem503(await request(app).post('/login/2'));
      expect(events.some((e) => e.type === 'unavailable')).toBe(true);
    } finally {
      stop();
      await redisServer.server.restart();
    }
    await readyAgain(redis);
    // The restarted server is empty (no persistence): the old session is gone, the app works again.
    await new Promise((r) => setTimeout(r, 150));
    const res = await agent.get('/me').expect(200);
    expect(res.body.userId).toBeNull();
  });

  it.each(['logout', 'logoutAll'])(
    'a %s whose sessions ended succeeds, even when their user-index entries cannot be removed',
    async (how) => {
      const { redis, app, sessions } = setup();
      const agent = request.agent(app);
      await agent.post('/login/ann').expect(200);
      // The user index (on another Cluster node, say) does not answer; the session's own key does.
      const zrem = jest.spyOn(redis, 'zrem').mockImplementationOnce(() => new Promise(() => {}));
      const events = captureEvents('session');
      try {
        if (how === 'logout') await agent.post('/logout').expect(204);
        else expect(await sessions.logoutAll('ann')).toBe(1);
        expect(zrem).toHaveBeenCalledTimes(1);
        expect(events.events.map((e) => e.type)).toContain('unlist-failed');
        expect((await agent.get('/me').expect(200)).body.userId).toBeNull();
      } finally {
        events.stop();
        zrem.mockRestore();
      }
    },
  );

  it('answers 503 within the timeout while the server is paused, instead of hanging', async () => {
    const { app } = setup();
    const agent = request.agent(app);
    await agent.post('/login/3').expect(200);
    const admin = new Redis(redisServer.server.url);
    try {
      await admin.call('CLIENT', 'PAUSE', '3000', 'ALL');
      const started = Date.now();
      expectProblem503(await agent.get('/me'));
      // The pause lasts 3 s; the 300 ms budget answers long before it ends.
      expect(Date.now() - started).toBeLessThan(2500);
    } finally {
      // Commands (even CLIENT UNPAUSE) wait for the pause to end, so just outlast it.
      await admin.ping();
      admin.disconnect();
    }
  });

  it('turns a failed save at the end of the request into a 503 instead of a 200 that silently lost the write', async () => {
    let killNow = false;
    const { redis, app } = setup(async () => {
      if (killNow) await redisServer.server.kill();
    });
    const agent = request.agent(app);
    try {
      await agent.post('/login/4').expect(200);
      await agent.post('/count').expect(200);
      killNow = true;
      expectProblem503(await agent.post('/count'));
    } finally {
      await redisServer.server.restart();
    }
    await readyAgain(redis);
  });

  it('a change answered 503 because its save timed out is not applied when Redis comes back', async () => {
    const admin = new Redis(redisServer.server.url);
    let pauseNow = false;
    // Redis stalls after the session was read, before it is saved.
    const { app } = setup(async () => {
      if (pauseNow) await admin.call('CLIENT', 'PAUSE', '1000', 'ALL');
    });
    const agent = request.agent(app);
    try {
      await agent.post('/login/6').expect(200);
      expect((await agent.post('/count').expect(200)).body).toEqual({ views: 1 });
      pauseNow = true;
      expectProblem503(await agent.post('/count'));
      pauseNow = false;
      // Outlast the pause: the write that timed out reaches Redis now, and must not count.
      await admin.ping();
      // The retry the 503 asked for counts once.
      expect((await agent.post('/count').expect(200)).body).toEqual({ views: 2 });
    } finally {
      await admin.ping();
      admin.disconnect();
    }
  });

  it('a save that Redis runs in time is not refused after the event loop stalled while the session was read', async () => {
    let stall = false;
    const busy = (ms: number) => {
      const end = performance.now() + ms;
      while (performance.now() < end);
    };
    // The read's reply waits in the socket while the loop is busy: read late, it dates Redis's
    // clock 400 ms behind. The save itself goes at once, well within the 300 ms budget.
    const { app } = setup(undefined, {
      before: (_req, _res, next) => {
        if (stall) process.nextTick(() => busy(400));
        next();
      },
    });
    const agent = request.agent(app);
    await agent.post('/login/7').expect(200);
    expect((await agent.post('/count').expect(200)).body).toEqual({ views: 1 });
    stall = true;
    const res = await agent.post('/count');
    stall = false;
    expect([res.status, res.body]).toEqual([200, { views: 2 }]);
  });

  it("a save answered 503 at the client's commandTimeout (shorter than the session timeout) does not apply later", async () => {
    const admin = new Redis(redisServer.server.url);
    let pauseNow = false;
    const redis = redisServer.client(); // createRedis: commandTimeout 500 ms
    const sessions = redisSession({ redis, secret: SECRET, timeout: '2s' });
    const app = sessionApp(sessions, {
      beforeWrite: async () => {
        if (pauseNow) await admin.call('CLIENT', 'PAUSE', '1000', 'ALL');
      },
    });
    const agent = request.agent(app);
    try {
      await agent.post('/login/8').expect(200);
      expect((await agent.post('/count').expect(200)).body).toEqual({ views: 1 });
      pauseNow = true;
      expectProblem503(await agent.post('/count'));
      pauseNow = false;
      await admin.ping();
      expect((await agent.get('/me').expect(200)).body.views).toBe(1);
    } finally {
      await admin.ping();
      admin.disconnect();
    }
  });

  it.each([
    ['before', 'a failed save still answers the 503 (compressed)'],
    ['after', 'a failed save leaves the 200 out and reports a late-error event'],
  ] as const)('compression() mounted %s redisSession(): %s', async (where, _outcome) => {
    const events = captureEvents('session');
    let killNow = false;
    const { redis, app } = setup(
      async () => {
        if (killNow) await redisServer.server.kill();
      },
      { [where]: compression({ threshold: 0 }) },
    );
    const agent = request.agent(app);
    try {
      await agent.post('/login/5').expect(200);
      killNow = true;
      const res = await agent.post('/count').set('Accept-Encoding', 'gzip');
      if (where === 'before') {
        // Compression wraps the answer the session hook lets out: here the 503.
        expectProblem503(res);
        expect(res.headers['content-encoding']).toBe('gzip');
      } else {
        // Compression sends the headers as the handler ends, before the session is written: the
        // 200 is out, and the lost write is only an event (README, "Fail mode").
        expect(res.status).toBe(200);
        await events.waitFor('late-error', 1);
      }
    } finally {
      events.stop();
      await redisServer.server.restart();
    }
    await readyAgain(redis);
  });
});

describe('a login whose old session cannot be ended', () => {
  it('fails, and leaves no new session: nobody is logged in twice', async () => {
    const { redis, sessions, app } = setup();
    await redis.flushall();
    const cookie = sessionCookie(await request(app).post('/login/alice').expect(200))!;
    const client = redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const destroy = client.erk_session_destroy_v5!;
    client.erk_session_destroy_v5 = () => Promise.reject(new Error('ERR refused for the test'));
    try {
      const login = await request(app).post('/login/bob').set('Cookie', cookie);
      expect(login.status).toBeGreaterThanOrEqual(500);
      expect(sessionCookie(login)).toBeUndefined();
      expect(await sessions.list('bob')).toEqual([]);
      expect((await request(app).get('/me').set('Cookie', cookie)).body).toMatchObject({ userId: 'alice' });
    } finally {
      client.erk_session_destroy_v5 = destroy;
    }
  });
});
