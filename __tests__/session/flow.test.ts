import { createHmac } from 'node:crypto';
import type { Redis } from 'ioredis';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { sessionKey, userIndexKey } from '../../lib/session/scripts';
import { eventually, useRedisServer } from '../helpers/redis';
import { commandsDuring, sessionApp, sessionCookie, sidOf } from './app';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const SECRET = 'a-test-secret-that-is-long-enough-0001';
const redisServer = useRedisServer();

function setup(extra: Partial<Parameters<typeof redisSession>[0]> = {}) {
  const redis = redisServer.client() as Redis;
  const sessions = redisSession({ redis, secret: SECRET, ttl: '1h', ...extra });
  return { redis, sessions, app: sessionApp(sessions) };
}

describe('redisSession login, logout and the per-user index', () => {
  it('login gives the session a new id, and the old id no longer finds any session', async () => {
    const { redis, sessions, app } = setup();
    const agent = request.agent(app);
    const first = await agent.post('/count').expect(200);
    const before = sessionCookie(first)!;
    expect(before).toBeDefined();
    expect((await agent.get('/me')).body).toMatchObject({ views: 1, userId: null });

    const login = await agent.post('/login/42').expect(200);
    const after = sessionCookie(login)!;
    expect(sidOf(after)).not.toBe(sidOf(before));
    expect((await agent.get('/me')).body).toMatchObject({ userId: '42', role: 'member' });

    // The pre-login cookie is dead: it reads as no session at all.
    const stale = await request(app).get('/me').set('Cookie', before.split(';')[0]!).expect(200);
    expect(stale.body).toEqual({ userId: null, views: 0, role: null });
    expect(await redis.hget(sessionKey('erk:', sidOf(before)), 'd')).toBeNull();
    expect(await sessions.list('42')).toHaveLength(1);
  });

  it('each request slides the TTL in Redis back to the full ttl without rewriting the data', async () => {
    const { redis, app } = setup({ ttl: '60s' });
    const agent = request.agent(app);
    const cookie = sessionCookie(await agent.post('/login/7').expect(200))!;
    const key = sessionKey('erk:', sidOf(cookie));
    const data = await redis.hget(key, 'd');
    await redis.pexpire(key, 2000);
    expect(await redis.pttl(key)).toBeLessThanOrEqual(2000);

    const res = await agent.get('/me').expect(200);
    expect(sessionCookie(res)).toBeDefined(); // rolling: the cookie is re-sent too
    expect(await redis.pttl(key)).toBeGreaterThan(30_000);
    expect(await redis.hget(key, 'd')).toBe(data);
  });

  it('reads an unchanged session and slides its expiry in one Redis command, and still saves changes', async () => {
    const { redis, app } = setup();
    const agent = request.agent(app);
    await agent.post('/login/9').expect(200);
    await agent.get('/me').expect(200); // the first read after login may refresh the user index
    const sent = jest.spyOn(redis, 'sendCommand');
    for (let i = 0; i < 5; i++) await agent.get('/me').expect(200);
    expect(sent).toHaveBeenCalledTimes(5);
    sent.mockClear();
    expect((await agent.post('/count').expect(200)).body).toEqual({ views: 1 });
    expect(sent).toHaveBeenCalledTimes(2); // read + slide, then the save of the new data
    sent.mockRestore();
    expect((await agent.get('/me').expect(200)).body).toMatchObject({ userId: '9', views: 1 });
  });

  it('does not store or send a cookie for a visitor whose session was never used', async () => {
    const { redis, app } = setup({ prefix: 'anon:' });
    const res = await request(app).get('/me').expect(200);
    expect(sessionCookie(res)).toBeUndefined();
    expect(await redis.keys('anon:*')).toEqual([]);
  });

  it('logout destroys the session, clears the cookie and drops it from the user index', async () => {
    const { redis, sessions, app } = setup();
    const agent = request.agent(app);
    const cookie = sessionCookie(await agent.post('/login/5').expect(200))!;
    const res = await agent.post('/logout').expect(204);
    expect(sessionCookie(res)).toMatch(/Expires=Thu, 01 Jan 1970/);
    const replay = await request(app).get('/me').set('Cookie', cookie.split(';')[0]!).expect(200);
    expect(replay.body.userId).toBeNull();
    expect(await sessions.list('5')).toEqual([]);
    expect(await redis.zcard(userIndexKey('erk:', '5'))).toBe(0);
  });

  it('logoutAll ends every session of one user on every device and leaves other users alone', async () => {
    const { sessions, app } = setup();
    const phone = request.agent(app);
    const laptop = request.agent(app);
    const someoneElse = request.agent(app);
    await phone.post('/login/u1').expect(200);
    await laptop.post('/login/u1').expect(200);
    await someoneElse.post('/login/u2').expect(200);

    expect(await sessions.logoutAll('u1')).toBe(2);
    expect((await phone.get('/me')).body.userId).toBeNull();
    expect((await laptop.get('/me')).body.userId).toBeNull();
    expect((await someoneElse.get('/me')).body.userId).toBe('u2');
    expect(await sessions.list('u1')).toEqual([]);
  });

  it('past maxSessionsPerUser, a login ends the sessions that expire soonest and leaves the others', async () => {
    const { redis, sessions, app } = setup({ maxSessionsPerUser: 2 });
    const devices = [request.agent(app), request.agent(app), request.agent(app)];
    for (const device of devices) {
      await device.post('/login/capped').expect(200);
      await new Promise((r) => setTimeout(r, 5)); // distinct index scores (Redis TIME, in ms)
    }
    const [first, second, third] = devices;
    expect((await first!.get('/me')).body.userId).toBeNull();
    expect((await second!.get('/me')).body.userId).toBe('capped');
    expect((await third!.get('/me')).body.userId).toBe('capped');
    expect(await sessions.list('capped')).toHaveLength(2);
    expect(await redis.zcard(userIndexKey('erk:', 'capped'))).toBe(2);
  });

  it("at the cap, logging in again where one is logged in ends that browser's old session, not another device's", async () => {
    const { sessions, app } = setup({ maxSessionsPerUser: 2 });
    const [phone, browser] = [request.agent(app), request.agent(app)];
    await phone.post('/login/again').expect(200);
    await sleep(5);
    await browser.post('/login/again').expect(200);
    await sleep(5);
    // Logging in again (a step-up, say): the old session ends before the new one is counted.
    await browser.post('/login/again').expect(200);
    expect((await phone.get('/me')).body.userId).toBe('again');
    expect((await browser.get('/me')).body.userId).toBe('again');
    expect(await sessions.list('again')).toHaveLength(2);
  });

  it('a cookie maxAge set after login() ("remember me") is stored: Redis keeps the session that long, across requests', async () => {
    const { redis, app } = setup();
    const agent = request.agent(app);
    const week = 7 * 24 * 3600_000;
    const cookie = sessionCookie(await agent.post(`/login/rem?maxAge=${week}`).expect(200))!;
    const key = sessionKey('erk:', sidOf(cookie));
    expect(await redis.pttl(key)).toBeGreaterThan(week - 60_000);
    // Each later request slides it by its own week, still in one command.
    const sent = jest.spyOn(redis, 'sendCommand');
    const next = await agent.get('/me').expect(200);
    expect(sent).toHaveBeenCalledTimes(1);
    sent.mockRestore();
    expect(next.body.userId).toBe('rem');
    const expires = Date.parse(/Expires=([^;]+)/.exec(sessionCookie(next)!)![1]!);
    expect(expires - Date.now()).toBeGreaterThan(week - 60_000);
    expect(await redis.pttl(key)).toBeGreaterThan(week - 60_000);
    // The user index vouches for it as long as it lives, so logoutAll and list() still find it.
    expect(
      Number((await redis.zrange(userIndexKey('erk:', 'rem'), '0', '-1', 'WITHSCORES'))[1]),
    ).toBeGreaterThan(Date.now() + week);
  });

  it('a "remember me" maxAge set after login() is one more write, not a second login: no second count or cap', async () => {
    const { redis, app } = setup();
    // Scripts load on first use (EVALSHA, NOSCRIPT, EVAL): warm them up.
    await request
      .agent(app)
      .post(`/login/warm?maxAge=${7 * 24 * 3600_000}`)
      .expect(200);
    const plain = await commandsDuring(redis, () => request.agent(app).post('/login/rm').expect(200));
    // End the old session, list the new one, write it, count the user's sessions.
    expect(plain.commands).toBe(4);
    const remembered = await commandsDuring(redis, () =>
      request
        .agent(app)
        .post(`/login/rm?maxAge=${7 * 24 * 3600_000}`)
        .expect(200),
    );
    // The same, then the write of its new lifetime and the longer index entry it needs.
    expect(remembered.commands).toBe(6);
  });

  it('a fresh login ends an older session that expires later ("remember me"), never itself', async () => {
    const { sessions, app } = setup({ maxSessionsPerUser: 1 });
    const remembered = request.agent(app);
    await remembered.post('/login/alice?maxAge=604800000').expect(200);
    const fresh = request.agent(app);
    await fresh.post('/login/alice').expect(200);
    // The index orders by expiry, so the new 1 h session scores lowest; the cap still keeps it.
    expect((await fresh.get('/me')).body.userId).toBe('alice');
    expect((await remembered.get('/me')).body.userId).toBeNull();
    expect(await sessions.list('alice')).toHaveLength(1);
  });

  it.each([1, 3])(
    'logins racing past maxSessionsPerUser: %p leave exactly the cap, the latest among them',
    async (cap) => {
      const { sessions, app } = setup({ maxSessionsPerUser: cap });
      const devices = Array.from({ length: 8 }, () => request.agent(app));
      // All at once: each lists its session before writing it, so the others find it listed, unwritten.
      const logins = await Promise.all(devices.map((d) => d.post('/login/racer').expect(200)));
      const users = await Promise.all(devices.map(async (d) => (await d.get('/me')).body.userId));
      const alive = users.filter((u) => u === 'racer').length;
      expect(alive).toBe(cap);
      expect((await sessions.list('racer')).length).toBe(cap);
      // A login ended by a later one before its answer went out sends no cookie for it: arriving
      // last, that cookie would replace the live one in the browser.
      logins.forEach((res, i) => {
        if (users[i] === 'racer') expect(sessionCookie(res)).toBeDefined();
      });
      expect(logins.filter((res) => sessionCookie(res)).length).toBeLessThan(8);
    },
  );

  it('a racing login does not end a session used since it read it: two logins past the cap end no more than the surplus', async () => {
    const { redis, sessions, app } = setup({ maxSessionsPerUser: 2 });
    const [x, y] = [request.agent(app), request.agent(app)];
    await x.post('/login/slid').expect(200);
    await sleep(30);
    await y.post('/login/slid').expect(200);
    await sleep(30);
    // Login a's cap reads the sessions, then decides 400 ms later, on what it read.
    const client = redis as unknown as { hmget: (...args: unknown[]) => Promise<unknown> };
    const hmget = client.hmget.bind(redis);
    let armed = true;
    let held: Promise<unknown> | undefined;
    client.hmget = (...args: unknown[]) => {
      const reply = hmget(...args);
      if (!armed) return reply;
      held ??= sleep(400);
      return reply.then(async (value) => {
        await held;
        return value;
      });
    };
    const a = request.agent(app);
    // then() sends it now (supertest sends a request only once it is awaited).
    const first = a
      .post('/login/slid')
      .expect(200)
      .then((res) => res);
    await sleep(100);
    armed = false;
    // x is used meanwhile (it now expires last), then login b runs its cap on fresh reads: it
    // keeps x and ends y and a.
    await x.get('/me').expect(200);
    const b = request.agent(app);
    await b.post('/login/slid').expect(200);
    await first;
    const users = await Promise.all([x, y, a, b].map(async (d) => (await d.get('/me')).body.userId));
    // a's cap would end x (the soonest to expire when it read): used since, it is left alone.
    expect(users).toEqual(['slid', null, null, 'slid']);
    // Left alone, x stays listed: logoutAll() still reaches it.
    expect((await sessions.list('slid')).length).toBe(2);
    expect(await sessions.logoutAll('slid')).toBe(2);
    expect((await x.get('/me')).body.userId).toBeNull();
  });

  it('keeps the 100 most recent sessions by default; maxSessionsPerUser: false keeps every one', async () => {
    const logins = async (app: ReturnType<typeof setup>['app'], user: string) => {
      for (let i = 0; i < 101; i++) await request.agent(app).post(`/login/${user}`).expect(200);
    };
    const capped = setup();
    await logins(capped.app, 'default-cap');
    expect(await capped.sessions.list('default-cap')).toHaveLength(100);
    const uncapped = setup({ maxSessionsPerUser: false });
    await logins(uncapped.app, 'no-cap');
    expect(await uncapped.sessions.list('no-cap')).toHaveLength(101);
  });

  it('a write from a request still in flight cannot bring back a session that logoutAll ended', async () => {
    const { redis, sessions, app } = setup();
    const agent = request.agent(app);
    const cookie = sessionCookie(await agent.post('/login/late').expect(200))!;
    const sid = sidOf(cookie);
    const session = await new Promise<Record<string, unknown>>((resolve, reject) =>
      sessions.store.get(sid, (e, s) => (e ? reject(e) : resolve(s as unknown as Record<string, unknown>))),
    );
    await sessions.logoutAll('late');
    await sessions.store.save(sid, session as never);
    expect(await redis.hget(sessionKey('erk:', sid), 'd')).toBeNull();
    expect(await sessions.list('late')).toEqual([]);
  });

  it('a request that outlives a logoutAll and its tombstone cannot bring the session back', async () => {
    const redis = redisServer.client() as Redis;
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const sessions = redisSession({ redis, secret: SECRET, ttl: '1h' });
    const app = sessionApp(sessions, { beforeWrite: () => gate });
    const agent = request.agent(app);
    const cookie = sessionCookie(await agent.post('/login/slow').expect(200))!;
    const key = sessionKey('erk:', sidOf(cookie));
    const inFlight = agent.post('/count').then((res) => res); // supertest sends on then()
    await sleep(100); // the request has read the session and waits in the handler
    expect(await sessions.logoutAll('slow')).toBe(1);
    await redis.del(key); // as if the tombstone had expired: the request outlived it
    release();
    await inFlight;
    expect(await redis.exists(key)).toBe(0);
    expect(await sessions.list('slow')).toEqual([]);
    expect((await agent.get('/me')).body.userId).toBeNull();
  });

  it('list shows each live session with a non-reversible id, and stays right after one expires on its own', async () => {
    const { redis, sessions, app } = setup();
    const phone = request.agent(app);
    const laptop = request.agent(app);
    const phoneLogin = await phone.post('/login/99').set('User-Agent', 'Phone/1.0').expect(200);
    await laptop.post('/login/99').set('User-Agent', 'Laptop/2.0').expect(200);
    await laptop.get('/me').expect(200);

    const listed = await sessions.list('99');
    expect(listed.map((s) => s.userAgent).sort()).toEqual(['Laptop/2.0', 'Phone/1.0']);
    const phoneSid = sidOf(sessionCookie(phoneLogin)!);
    const phoneEntry = listed.find((s) => s.userAgent === 'Phone/1.0')!;
    expect(phoneEntry.id).toBe(phoneLogin.body.id);
    expect(phoneEntry.id).not.toContain(phoneSid);
    for (const s of listed) {
      expect(s.createdAt).toBeInstanceOf(Date);
      expect(s.lastSeenAt.getTime()).toBeGreaterThanOrEqual(s.createdAt.getTime());
    }
    expect(listed[0]!.userAgent).toBe('Laptop/2.0'); // most recently seen first

    // The phone's session expires in Redis by itself; nobody tells the index.
    await redis.pexpire(sessionKey('erk:', phoneSid), 1);
    await eventually(async () => (await redis.exists(sessionKey('erk:', phoneSid))) === 0, 'session expiry');
    const after = await sessions.list('99');
    expect(after.map((s) => s.userAgent)).toEqual(['Laptop/2.0']);
    // Its entry stays until its score (2 × ttl) retires it: an entry without a key may also be a
    // login that listed its session and is about to write it, so list() leaves it alone.
    expect(await redis.zcard(userIndexKey('erk:', '99'))).toBe(2);
    expect(await sessions.logoutAll('99')).toBe(1);
  });

  it('revoke ends one session by its list id', async () => {
    const { sessions, app } = setup();
    const a = request.agent(app);
    const b = request.agent(app);
    const { id } = (await a.post('/login/r1').expect(200)).body as { id: string };
    await b.post('/login/r1').expect(200);
    expect(await sessions.revoke('r1', id)).toBe(true);
    expect(await sessions.revoke('r1', id)).toBe(false);
    expect((await a.get('/me')).body.userId).toBeNull();
    expect((await b.get('/me')).body.userId).toBe('r1');
  });

  it('every key it writes has a TTL and a hash tag', async () => {
    const { redis, app } = setup();
    await request.agent(app).post('/login/ttl-check').expect(200);
    let cursor = '0';
    const keys: string[] = [];
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', 'erk:sess*', 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) {
      expect(key).toMatch(/\{[^}]+\}/);
      expect(await redis.pttl(key)).toBeGreaterThan(0);
    }
  });
});

/** What express-session's cookie-signature does: `<value>.<base64 HMAC-SHA256 without padding>`. */
function sign(value: string, secret: string): string {
  return `${value}.${createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '')}`;
}

describe('redisSession secret rotation', () => {
  it('accepts cookies signed with an older secret and signs new cookies with the first one', async () => {
    const redis = redisServer.client() as Redis;
    const oldApp = sessionApp(redisSession({ redis, secret: 'old-secret-old-secret-old-secret-1' }));
    const rotated = redisSession({
      redis,
      secret: ['new-secret-new-secret-new-secret-2', 'old-secret-old-secret-old-secret-1'],
    });
    const newApp = sessionApp(rotated);

    const oldCookie = sessionCookie(await request(oldApp).post('/login/rot').expect(200))!;
    const me = await request(newApp).get('/me').set('Cookie', oldCookie.split(';')[0]!).expect(200);
    expect(me.body.userId).toBe('rot');

    const fresh = sessionCookie(await request(newApp).post('/login/rot2').expect(200))!;
    const sid = sidOf(fresh);
    const value = decodeURIComponent(fresh.split(';')[0]!.slice('sid='.length));
    expect(value).toBe(`s:${sign(sid, 'new-secret-new-secret-new-secret-2')}`);
    expect(value).not.toBe(`s:${sign(sid, 'old-secret-old-secret-old-secret-1')}`);
    // An app that only knows the old secret cannot read it: the new secret really signed it.
    const oldOnly = await request(oldApp).get('/me').set('Cookie', fresh.split(';')[0]!).expect(200);
    expect(oldOnly.body.userId).toBeNull();
  });
});
