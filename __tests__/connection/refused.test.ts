import express from 'express';
import request from 'supertest';
import { breakerFor, configureBreaker } from '../../lib/breaker';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { RedisRefusedError, RedisUnavailableError } from '../../lib/errors';
import { guarded } from '../../lib/guarded';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { redisSession } from '../../lib/session';
import { sessionHandle } from '../../lib/session/scripts';
import { useRedisServer } from '../helpers/redis';

// Redis answers, but refuses the kit's calls: an ACL user without a permission (NOPERM), a full
// memory under noeviction (OOM). Every middleware applies its documented fail mode, as when Redis is
// down, and never lets Express print a stack trace; the breaker stays closed.

const redis = useRedisServer();

/** A kit client logged in as an ACL user that may not run scripts (NOPERM on every decision). */
async function noScripts(): Promise<RedisClient> {
  const admin = redis.plain();
  await admin.call(
    'ACL',
    'SETUSER',
    'noscripts',
    'on',
    '>pw',
    '~*',
    '&*',
    '+@all',
    '-eval',
    '-evalsha',
    '-script',
  );
  const { port } = redis.server;
  return redis.client({ url: `redis://noscripts:pw@127.0.0.1:${port}` });
}

function app(client: RedisClient) {
  const sessions = redisSession({ redis: client, secret: 'x'.repeat(32), cookie: { secure: false } });
  const a = express();
  a.post(
    '/limited',
    rateLimit({ redis: client, limit: 5, window: '1m', failMode: 'closed', logger: { warn: () => {} } }),
    (_q, r) => {
      r.send('ok');
    },
  );
  a.get(
    '/cached',
    cacheResponse({ redis: client, ttl: '1m', l1: false, logger: { warn: () => {} } }),
    (_q, r) => {
      r.send('page');
    },
  );
  a.post('/orders', idempotency({ redis: client }), (_q, r) => {
    r.status(201).json({ ok: true });
  });
  a.post('/login', sessions, async (req, res) => {
    await sessions.login(req, { userId: 'u1' });
    res.json({ ok: true });
  });
  a.get('/me', sessions, (req, res) => {
    res.json({ userId: req.session.userId ?? null });
  });
  a.post('/note', sessions, (req, res) => {
    (req.session as unknown as Record<string, unknown>).note = 'new';
    res.json({ ok: true });
  });
  a.post('/logout', sessions, async (req, res) => {
    await sessions.logout(req, res);
    res.json({ ok: true });
  });
  a.use(sessions.handleErrors);
  return a;
}

const isProblem503 = (res: request.Response) => {
  expect(res.status).toBe(503);
  expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
  expect(res.text).not.toMatch(/at .*\.(js|ts):\d+/);
};

describe('when Redis refuses the calls (NOPERM)', () => {
  it('reports a refused command as RedisRefusedError, leaving the breaker closed', async () => {
    const client = redis.plain();
    await client.set('str', 'v');
    configureBreaker(client, { failureThreshold: 1, cooldownMs: 10_000 });
    const error = await guarded(client, () => client.lpush('str', 'x'), {
      timeoutMs: 500,
      component: 'cache',
    }).catch((e) => e);
    expect(error).toBeInstanceOf(RedisRefusedError);
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect(error.message).toMatch(/^WRONGTYPE/);
    expect(breakerFor(client).currentState).toBe('closed');
  });

  it('answers 503 problem+json from idempotency, sessions and a closed rate limiter, and BYPASS from the cache', async () => {
    const a = app(await noScripts());
    isProblem503(await request(a).post('/orders').set('Idempotency-Key', 'k1'));
    isProblem503(await request(a).post('/login'));
    isProblem503(await request(a).post('/limited'));
    const page = await request(a).get('/cached');
    expect([page.status, page.headers['x-cache'], page.text]).toEqual([200, 'BYPASS', 'page']);
  });
});

describe('when Redis memory is full (OOM under noeviction)', () => {
  it('refuses writes with the fail modes, while reads that need no write still work', async () => {
    const admin = redis.plain();
    await admin.flushall();
    const client = redis.client();
    // One counted failure would open it: refusals must not count.
    configureBreaker(client, { failureThreshold: 1, cooldownMs: 10_000 });
    const a = app(client);
    const user = request.agent(a);
    await user.post('/login').expect(200);
    // Filled while there was room: a cache entry to read later.
    expect((await request(a).get('/cached')).headers['x-cache']).toBe('MISS');
    await new Promise((r) => setTimeout(r, 100));
    expect((await request(a).get('/cached')).headers['x-cache']).toBe('HIT');
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    try {
      // A new key's reservation is a write: refused, so the handler does not run unprotected.
      for (let i = 0; i < 8; i++)
        isProblem503(await request(a).post('/orders').set('Idempotency-Key', `oom-${i}`));
      isProblem503(await request(a).post('/login'));
      // A logged-in user still reads (the last-seen time and the index claim wait for room); a
      // change to the session is a write.
      for (let i = 0; i < 3; i++) expect((await user.get('/me')).body).toEqual({ userId: 'u1' });
      isProblem503(await user.post('/note'));
      // Ending a session frees memory: it works.
      await user.post('/logout').expect(200);
      expect((await user.get('/me')).body).toEqual({ userId: null });
      // The refusals did not open the breaker: a read still gets its hit.
      expect((await request(a).get('/cached')).headers['x-cache']).toBe('HIT');
      expect(breakerFor(client).currentState).toBe('closed');
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
  });
});

describe('invalidate() when Redis refuses only the PUBLISH', () => {
  it('deletes the entries and rejects with a RedisUnavailableError that says the other instances were not told', async () => {
    const admin = redis.plain();
    await admin.call('ACL', 'SETUSER', 'nopublish', 'on', '>pw', '~*', '&*', '+@all', '-publish');
    const client = redis.client({ url: `redis://nopublish:pw@127.0.0.1:${redis.server.port}` });
    const mw = cacheResponse({
      redis: client,
      ttl: '1m',
      l1: false,
      tags: () => ['t'],
      logger: { warn: () => {} },
    });
    const a = express();
    a.get('/tagged', mw, (_q, r) => {
      r.send('v');
    });
    await request(a).get('/tagged');
    await new Promise((r) => setTimeout(r, 100));
    expect((await request(a).get('/tagged')).headers['x-cache']).toBe('HIT');
    const error = await mw.invalidate({ tags: ['t'] }).catch((e) => e);
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect(error.message).toMatch(/deleted from Redis, but other instances were not told/);
    expect((await request(a).get('/tagged')).headers['x-cache']).toBe('MISS');
    // Another failure of the same call comes first: the message above would not be true then.
    await admin.set('erk:t:{bad}', 'a string');
    const both = await mw.invalidate({ tags: ['t', 'bad'] }).catch((e) => e);
    expect(both).toBeInstanceOf(RedisRefusedError);
    expect(both.message).toMatch(/WRONGTYPE/);
  });
});

describe('writes Redis refuses under OOM leave nothing half done', () => {
  async function underOom<T>(run: () => Promise<T>): Promise<T> {
    const admin = redis.plain();
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    try {
      return await run();
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
  }

  /** An app with POST /login (as `userId`) and GET /me behind `sessions`. */
  function loginApp(sessions: ReturnType<typeof redisSession>, userId: string) {
    const a = express();
    a.use(sessions);
    a.post('/login', async (req, res) => {
      await sessions.login(req, { userId });
      res.json({ ok: true });
    });
    a.get('/me', (req, res) => {
      res.json({ userId: req.session.userId ?? null });
    });
    a.use(sessions.handleErrors);
    return a;
  }

  /** The session cookie a response set, to send by hand (a jar drops it at its Expires, to the second). */
  const cookieOf = (res: request.Response) =>
    (res.headers['set-cookie'] as unknown as string[])[0]!.split(';')[0]!;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('a login past maxSessionsPerUser that Redis refuses ends none of the user’s sessions', async () => {
    const client = redis.client();
    const sessions = redisSession({
      redis: client,
      secret: 'x'.repeat(32),
      cookie: { secure: false },
      maxSessionsPerUser: 1,
    });
    const a = loginApp(sessions, 'capped');
    const first = await request(a).post('/login');
    const cookie = cookieOf(first);
    isProblem503(await underOom(() => request(a).post('/login')));
    expect((await request(a).get('/me').set('Cookie', cookie)).body).toEqual({ userId: 'capped' });
    expect(await sessions.list('capped')).toHaveLength(1);
  });

  it('a login over a live session that Redis refuses keeps that session: 503, not logged out as well', async () => {
    const client = redis.client();
    const sessions = redisSession({ redis: client, secret: 'x'.repeat(32), cookie: { secure: false } });
    const a = loginApp(sessions, 'relogin');
    const cookie = cookieOf(await request(a).post('/login').expect(200));
    const again = await underOom(() => request(a).post('/login').set('Cookie', cookie));
    isProblem503(again);
    expect(again.headers['set-cookie']).toBeUndefined();
    const me = await request(a).get('/me').set('Cookie', cookie);
    expect(me.body).toEqual({ userId: 'relogin' });
    // Still a live session: a rolling one re-sends its cookie, as before the refused login.
    expect(me.headers['set-cookie']).toBeDefined();
    expect(await sessions.list('relogin')).toHaveLength(1);
  });

  it('a login’s end Redis refuses takes back only its own mark: an end noted meanwhile (a logout) stands', async () => {
    const sessions = redisSession({
      redis: redis.client(),
      secret: 'x'.repeat(32),
      cookie: { secure: false },
    });
    const store = sessions.store;
    const refused = (sid: string) => underOom(() => store.remove(sid, { forLogin: true }).catch((e) => e));
    // Alone, the refused end leaves the session as it was: its requests keep re-sending its cookie.
    expect(await refused('alone')).toBeInstanceOf(RedisRefusedError);
    expect(store.endedLately('alone')).toBe(false);
    // A logout of the same session noted its end while the login's was under way.
    store.noteEnded([sessionHandle('both')]);
    expect(await refused('both')).toBeInstanceOf(RedisRefusedError);
    expect(store.endedLately('both')).toBe(true);
  });

  it('a session read under OOM whose index claim is refused does not outlive its index entry (logoutAll still reaches it)', async () => {
    const client = redis.client();
    const sessions = redisSession({
      redis: client,
      secret: 'x'.repeat(32),
      cookie: { secure: false },
      ttl: 2000,
    });
    const a = loginApp(sessions, 'oom-index');
    const login = await request(a).post('/login').expect(200);
    const cookie = cookieOf(login);
    const me = async () => (await request(a).get('/me').set('Cookie', cookie)).body;
    // The index entry lasts 2 × ttl (4 s) from the login; a read at 3 s must claim more, since
    // sliding the session by ttl would take it past that.
    await sleep(1500);
    expect(await me()).toEqual({ userId: 'oom-index' });
    await sleep(1500);
    expect(await underOom(me)).toEqual({ userId: 'oom-index' });
    // Once the index entry has run out, the session must be gone too: nothing lists it any more.
    await sleep(1300);
    expect(await sessions.list('oom-index')).toEqual([]);
    expect(await me()).toEqual({ userId: null });
  });

  it('a session whose index claim Redis refuses on the index (a full index node; here an ACL) falls back to the old index entry’s end', async () => {
    const admin = redis.plain();
    await admin.call('ACL', 'SETUSER', 'nozadd', 'on', '>pw', '~*', '&*', '+@all', '-zadd');
    const sessionsOn = (client: RedisClient) =>
      redisSession({
        redis: client,
        secret: 'x'.repeat(32),
        cookie: { secure: false },
        ttl: 2000,
        prefix: 'fb:',
      });
    const appOf = (sessions: ReturnType<typeof sessionsOn>) => loginApp(sessions, 'fallback');
    const full = sessionsOn(redis.client());
    const fullApp = appOf(full);
    // The same store through a user who may not ZADD: its index writes are refused, the rest works.
    const limitedApp = appOf(
      sessionsOn(redis.client({ url: `redis://nozadd:pw@127.0.0.1:${redis.server.port}` })),
    );
    const login = await request(fullApp).post('/login').expect(200);
    const cookie = cookieOf(login);
    await sleep(1500);
    expect((await request(fullApp).get('/me').set('Cookie', cookie)).body).toEqual({ userId: 'fallback' });
    await sleep(1500);
    // Needs a claim (the entry ends at 4 s, a slide would reach 5 s); the index refuses it.
    isProblem503(await request(limitedApp).get('/me').set('Cookie', cookie));
    await sleep(1300);
    expect(await full.list('fallback')).toEqual([]);
    expect((await request(fullApp).get('/me').set('Cookie', cookie)).body).toEqual({ userId: null });
  });

  it('a key forgotten while in flight is not reserved again under OOM: 503, not a handler run that cannot be stored', async () => {
    const client = redis.client();
    const mw = idempotency({ redis: client });
    let release: () => void = () => {};
    let runs = 0;
    const a = express();
    a.post('/slow', mw, async (_req, res) => {
      runs++;
      if (runs === 1) await new Promise<void>((r) => (release = r));
      res.status(201).json({ run: runs });
    });
    const first = request(a)
      .post('/slow')
      .set('Idempotency-Key', 'f1')
      .then((r) => r);
    await new Promise((r) => setTimeout(r, 100));
    expect(await mw.forget({ key: 'f1', route: '/slow', ip: '::ffff:127.0.0.1' })).toBe(true);
    isProblem503(await underOom(() => request(a).post('/slow').set('Idempotency-Key', 'f1')));
    release();
    expect((await first).status).toBe(201);
    expect(runs).toBe(1);
  });
});
