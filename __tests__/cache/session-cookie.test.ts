import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { redisSession } from '../../lib/session';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { entryKeys, sleep } from './helpers';

describe('cacheResponse behind redisSession', () => {
  const redis = useRedisServer();

  it('never stores a response that starts a session: its Set-Cookie arrives only as the headers go out', async () => {
    const client = redis.client();
    const app = express();
    app.use(redisSession({ redis: client, secret: 'z'.repeat(40) }));
    let runs = 0;
    app.get('/welcome', cacheResponse({ redis: client, ttl: '1m', l1: false }), (req, res) => {
      runs += 1;
      // Personal content (a CSRF token, a cart…) that only this visitor's new session should see.
      (req.session as unknown as { token: string }).token = `t-${runs}`;
      res.json({ token: `t-${runs}` });
    });
    const first = await request(app).get('/welcome').expect(200);
    expect(first.headers['set-cookie']?.[0]).toMatch(/^sid=/);
    await sleep(100);
    const second = await request(app).get('/welcome').expect(200);
    expect(second.headers['x-cache']).not.toBe('HIT');
    expect(second.body.token).toBe('t-2');
    expect(runs).toBe(2);
    expect(await entryKeys(client)).toEqual([]);
  });

  it.each(['app', '__Host-app', 'myapp_s'])(
    "never serves one user's page to another when the kit's own session cookie is called %s (no rule matches the name)",
    async (name) => {
      const client = redis.client();
      await client.flushall();
      const app = express();
      const sessions = redisSession({
        redis: client,
        secret: 'z'.repeat(40),
        name,
        rolling: false,
        cookie: name.startsWith('__Host-') ? { secure: true } : {},
      });
      app.set('trust proxy', true);
      app.use(sessions);
      app.post('/login/:user', async (req, res) => {
        await sessions.login(req, { userId: req.params.user as string });
        res.end();
      });
      app.get('/balance', cacheResponse({ redis: client, ttl: '1m', l1: false }), (req, res) => {
        res.json({ user: req.session.userId ?? null });
      });
      const login = await request(app).post('/login/alice').set('X-Forwarded-Proto', 'https').expect(200);
      const cookie = (login.headers['set-cookie'] as unknown as string[])[0]!.split(';')[0]!;
      const alice = await request(app).get('/balance').set('Cookie', cookie).expect(200);
      expect(alice.body.user).toBe('alice');
      expect(alice.headers['x-cache']).toBe('BYPASS');
      await sleep(100);
      const anonymous = await request(app).get('/balance').expect(200);
      expect(anonymous.body.user).toBe(null);
    },
  );

  it('still caches a public route that does not touch the session', async () => {
    const client = redis.client();
    const app = express();
    app.use(redisSession({ redis: client, secret: 'z'.repeat(40) }));
    app.get('/public', cacheResponse({ redis: client, ttl: '1m', l1: false }), (_req, res) => {
      res.json({ hello: 'world' });
    });
    await request(app).get('/public').expect(200);
    await sleep(100);
    expect((await request(app).get('/public').expect(200)).headers['x-cache']).toBe('HIT');
  });
});

describe('cacheResponse: default per-user cookie detection', () => {
  const redis = useRedisServer();
  let client: RedisClient;
  useFlushedClient(redis, (c) => {
    client = c;
  });

  function profileApp(
    options: {
      sessionCookie?: RegExp | string[] | false;
      credentialHeaders?: RegExp | string[] | false;
    } = {},
  ) {
    const app = express();
    let runs = 0;
    app.get(
      '/profile',
      cacheResponse({ redis: client, ttl: '1m', l1: { max: 10 }, ...options }),
      (req, res) => {
        runs += 1;
        res.json({ cookie: req.headers.cookie ?? null, key: req.headers['x-api-key'] ?? null, runs });
      },
    );
    return { app, client, runs: () => runs };
  }

  it.each([
    'appSession',
    'sessionToken',
    'userSession',
    'mysess',
    'SESS1a2b',
    'connect.sid',
    'token',
    'jwt',
    'auth_token',
    'XSRF-TOKEN',
    'user_id',
    'uid',
    'userId',
    'id',
    'remember_me',
    'login',
    '.AspNetCore.Identity.Application',
    'wordpress_logged_in_5c0f',
    'wordpress_sec_5c0f',
    'logged_in',
    'api_key',
    'apikey',
  ])('never answers a request carrying a %s cookie from the cache', async (name) => {
    const { app, client } = profileApp();
    const alice = await request(app).get('/profile').set('Cookie', `${name}=alice`).expect(200);
    expect(alice.headers['x-cache']).toBe('BYPASS');
    await sleep(50);
    const bob = await request(app).get('/profile').set('Cookie', `${name}=bob`).expect(200);
    expect(bob.headers['x-cache']).toBe('BYPASS');
    expect(bob.body.cookie).toBe(`${name}=bob`);
    expect(await client.keys('erk:c:*')).toEqual([]);
  });

  it('still caches requests whose cookies are not per-user (theme, consent)', async () => {
    const { app, runs } = profileApp();
    // Nor analytics ids whose names merely contain "id" or "uid", nor tracking, bot-manager and preference cookies.
    const cookies =
      'theme=dark; cookie_consent=yes; _ga=GA1.1.1; guid=1; video_id=2; mf_user=1; sec_cpt=2; user_locale=de';
    await request(app).get('/profile').set('Cookie', cookies).expect(200);
    await sleep(50);
    const again = await request(app).get('/profile').set('Cookie', cookies);
    expect(again.headers['x-cache']).toBe('HIT');
    expect(runs()).toBe(1);
  });

  it('lets sessionCookie replace the default rule', async () => {
    const { app } = profileApp({ sessionCookie: ['sid'] });
    const first = await request(app).get('/profile').set('Cookie', 'token=alice').expect(200);
    expect(first.headers['x-cache']).toBe('MISS');
    const bypassed = await request(app).get('/profile').set('Cookie', 'sid=bob').expect(200);
    expect(bypassed.headers['x-cache']).toBe('BYPASS');
  });

  it.each([
    'X-Api-Key',
    'Api-Key',
    'X-Auth-Token',
    'X-Access-Token',
    'X-Amz-Security-Token',
    'X-Forwarded-User',
    'X-Remote-User',
    'X-User-Id',
    'X-Ms-Client-Principal',
    'Cf-Access-Jwt-Assertion',
    'Proxy-Authorization',
    'X-Consumer-Id',
    'X-Credential-Identifier',
    'X-Forwarded-Email',
    'X-Amzn-Oidc-Identity',
    'X-Forwarded-Client-Cert',
    'X-Userinfo',
    'X-SSL-Client-S-DN',
    'X-Client-Verify',
    'X-Forwarded-Groups',
  ])('never answers a request carrying a %s header from the cache', async (name) => {
    const { app, client } = profileApp();
    expect((await request(app).get('/profile').set(name, 'alice').expect(200)).headers['x-cache']).toBe(
      'BYPASS',
    );
    await sleep(50);
    expect((await request(app).get('/profile').set(name, 'bob').expect(200)).headers['x-cache']).toBe(
      'BYPASS',
    );
    expect(await client.keys('erk:c:*')).toEqual([]);
  });

  it('still caches requests whose headers carry no credential (a browser navigation, tracing, conditional)', async () => {
    const { app, runs } = profileApp();
    const headers = {
      'User-Agent': 'test',
      // What Chrome and Firefox send with every page load the user starts.
      'Sec-Fetch-User': '?1',
      'Sec-Fetch-Mode': 'navigate',
      'Sec-Ch-Ua': '"Chromium";v="130"',
      'Upgrade-Insecure-Requests': '1',
      'X-Request-Id': '1',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      'If-None-Match': '"x"',
    };
    await request(app).get('/profile').set(headers).expect(200);
    await sleep(50);
    expect((await request(app).get('/profile').set(headers)).headers['x-cache']).toBe('HIT');
    expect(runs()).toBe(1);
  });

  it('lets credentialHeaders replace the default rule, and false leaves only Authorization', async () => {
    const listed = profileApp({ credentialHeaders: ['X-Tenant-Key'] }).app;
    expect((await request(listed).get('/profile').set('X-Tenant-Key', 'a')).headers['x-cache']).toBe(
      'BYPASS',
    );
    expect((await request(listed).get('/profile').set('X-Api-Key', 'a')).headers['x-cache']).toBe('MISS');
    const off = profileApp({ credentialHeaders: false }).app;
    await sleep(50);
    expect((await request(off).get('/profile').set('X-Api-Key', 'b')).headers['x-cache']).toBe('HIT');
    expect((await request(off).get('/profile').set('Authorization', 'Bearer b')).headers['x-cache']).toBe(
      'BYPASS',
    );
    expect(() => profileApp({ credentialHeaders: 'x-api-key' as never })).toThrow(
      /option "credentialHeaders"/,
    );
  });

  it("a RegExp of the app's own never counts a browser's Sec-* headers, and naming one is refused", async () => {
    const { app } = profileApp({ credentialHeaders: /user$/ });
    expect((await request(app).get('/profile').set('X-Forwarded-User', 'ada')).headers['x-cache']).toBe(
      'BYPASS',
    );
    // Sent by browsers with every page load, whoever is logged in.
    expect((await request(app).get('/profile').set('Sec-Fetch-User', '?1')).headers['x-cache']).toBe('MISS');
    expect(() => profileApp({ credentialHeaders: ['X-Tenant', 'Sec-Fetch-User'] })).toThrow(
      /option "credentialHeaders" cannot name "Sec-Fetch-User"/,
    );
  });

  it('a RegExp with the g flag, in any case, recognises the header on every request, not every other one', async () => {
    // Written as the header is usually spelt: header names are matched regardless of case.
    const { app, client } = profileApp({ credentialHeaders: /^X-Api-Key$/g, sessionCookie: /^sid$/g });
    for (let i = 0; i < 4; i++) {
      expect((await request(app).get('/profile').set('X-Api-Key', `k${i}`)).headers['x-cache']).toBe(
        'BYPASS',
      );
      expect((await request(app).get('/profile').set('Cookie', `sid=s${i}`)).headers['x-cache']).toBe(
        'BYPASS',
      );
    }
    expect(await client.keys('erk:c:*')).toEqual([]);
  });
});
