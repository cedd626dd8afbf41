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
