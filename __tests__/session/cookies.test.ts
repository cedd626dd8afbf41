import type { Redis } from 'ioredis';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';
import { sessionApp, sessionCookie } from './app';

const SECRET = 'cookie-test-secret-cookie-test-secret';
const redisServer = useRedisServer();

describe('redisSession cookie flags', () => {
  it('over plain http: HttpOnly, SameSite=Lax, Path=/, the ttl as lifetime, not Secure, named sid', async () => {
    const app = sessionApp(redisSession({ redis: redisServer.client() as Redis, secret: SECRET, ttl: '2h' }));
    const cookie = sessionCookie(await request(app).post('/count').expect(200))!;
    expect(cookie).toMatch(/^sid=s%3A/);
    expect(cookie).toMatch(/; HttpOnly/);
    expect(cookie).toMatch(/; SameSite=Lax/);
    expect(cookie).toMatch(/; Path=\//);
    expect(cookie).not.toMatch(/; Secure/);
    const expires = Date.parse(/Expires=([^;]+)/.exec(cookie)![1]!);
    expect(expires - Date.now()).toBeGreaterThan(2 * 3600_000 - 60_000);
    expect(expires - Date.now()).toBeLessThanOrEqual(2 * 3600_000 + 1000);
  });

  it('behind a trusted proxy that says X-Forwarded-Proto: https, the cookie is Secure', async () => {
    const sessions = redisSession({ redis: redisServer.client() as Redis, secret: SECRET });
    const app = sessionApp(sessions, { trustProxy: true });
    const res = await request(app).post('/count').set('X-Forwarded-Proto', 'https').expect(200);
    expect(sessionCookie(res)).toMatch(/; Secure/);
    const plain = await request(app).post('/count').set('X-Forwarded-Proto', 'http').expect(200);
    expect(sessionCookie(plain)).not.toMatch(/; Secure/);
  });

  it("sameSite: 'auto' gives SameSite=None over HTTPS and Lax over HTTP, and logout() clears the cookie with it", async () => {
    const sessions = redisSession({
      redis: redisServer.client() as Redis,
      secret: SECRET,
      cookie: { sameSite: 'auto' },
    });
    const app = sessionApp(sessions, { trustProxy: true });
    const secure = await request(app).post('/login/u1').set('X-Forwarded-Proto', 'https').expect(200);
    expect(sessionCookie(secure)).toMatch(/; Secure; SameSite=None|; SameSite=None.*; Secure/);
    const plain = await request(app).post('/count').set('X-Forwarded-Proto', 'http').expect(200);
    expect(sessionCookie(plain)).toMatch(/; SameSite=Lax/);
    const cookie = sessionCookie(secure)!.split(';')[0]!;
    // It threw from the cookie library ("option sameSite is invalid"), after the session had ended.
    const out = await request(app).post('/logout').set('X-Forwarded-Proto', 'https').set('Cookie', cookie);
    expect(out.status).toBe(204);
    expect(sessionCookie(out)).toMatch(/Expires=Thu, 01 Jan 1970.*SameSite=None/);
    expect((await request(app).get('/me').set('Cookie', cookie).expect(200)).body.userId).toBeNull();
  });

  it('ignores X-Forwarded-Proto when Express does not trust the proxy', async () => {
    const app = sessionApp(redisSession({ redis: redisServer.client() as Redis, secret: SECRET }));
    const res = await request(app).post('/count').set('X-Forwarded-Proto', 'https').expect(200);
    expect(sessionCookie(res)).not.toMatch(/; Secure/);
  });

  it('applies cookie overrides and a custom name', async () => {
    const sessions = redisSession({
      redis: redisServer.client() as Redis,
      secret: SECRET,
      name: '__Host-app',
      cookie: { sameSite: 'strict', secure: true },
    });
    const app = sessionApp(sessions, { trustProxy: true });
    const res = await request(app).post('/count').set('X-Forwarded-Proto', 'https').expect(200);
    const cookie = sessionCookie(res, '__Host-app')!;
    expect(cookie).toMatch(/; SameSite=Strict/);
    expect(cookie).toMatch(/; Secure/);
    expect(cookie).toMatch(/; HttpOnly/);
  });

  it('with rolling: false the cookie is not re-sent on requests that do not change the session', async () => {
    const app = sessionApp(
      redisSession({ redis: redisServer.client() as Redis, secret: SECRET, rolling: false }),
    );
    const agent = request.agent(app);
    expect(sessionCookie(await agent.post('/count').expect(200))).toBeDefined();
    const res = await agent.get('/me').expect(200);
    expect(res.body.views).toBe(1);
    expect(sessionCookie(res)).toBeUndefined();
  });
});

describe('redisSession and the lifetimes express-session documents', () => {
  function app() {
    const sessions = redisSession({ redis: redisServer.client() as Redis, secret: SECRET, ttl: '1h' });
    const a = sessionApp(sessions);
    a.post('/browser-only', (req, res) => {
      // express-session's README: a cookie that lasts only while the browser is open.
      req.session.cookie.expires = false as unknown as Date;
      res.json({ ok: true });
    });
    a.post('/forget-me', (req, res) => {
      req.session.cookie.maxAge = 0;
      res.json({ ok: true });
    });
    return { a, sessions };
  }
  const cookieOf = (res: request.Response) => sessionCookie(res)!.split(';')[0]!;

  it('keeps a session whose cookie.expires = false: it reads back, is listed, and logs out', async () => {
    const { a, sessions } = app();
    const login = await request(a).post('/login/u1').expect(200);
    const cookie = cookieOf(login);
    const set = await request(a).post('/browser-only').set('Cookie', cookie).expect(200);
    expect(sessionCookie(set)).not.toMatch(/Expires=/);
    expect((await request(a).get('/me').set('Cookie', cookie)).body.userId).toBe('u1');
    expect((await request(a).get('/me').set('Cookie', cookie)).body.userId).toBe('u1');
    expect(await sessions.list('u1')).toHaveLength(1);
    await request(a).post('/logout').set('Cookie', cookie).expect(204);
    expect((await request(a).get('/me').set('Cookie', cookie)).body.userId).toBeNull();
    expect(await sessions.list('u1')).toHaveLength(0);
  });

  it('ends the session in Redis when a handler sets cookie.maxAge = 0, so a copy of the cookie opens nothing', async () => {
    const { a, sessions } = app();
    const cookie = cookieOf(await request(a).post('/login/u2').expect(200));
    const ended = await request(a).post('/forget-me').set('Cookie', cookie).expect(200);
    const expires = Date.parse(/Expires=([^;]+)/.exec(sessionCookie(ended) ?? '')?.[1] ?? '');
    expect(expires).toBeLessThanOrEqual(Date.now());
    expect((await request(a).get('/me').set('Cookie', cookie)).body.userId).toBeNull();
    expect(await sessions.list('u2')).toHaveLength(0);
  });
});
