import type { Express } from 'express';
import pino from 'pino';
import request from 'supertest';
import { createApp } from '../../demo-app/app';
import { BOARD_SIZE } from '../../demo-app/routes/leaderboard';
import { useRedisServer } from '../helpers/redis';

describe('demo routes', () => {
  const redis = useRedisServer();
  let app: Express;

  beforeAll(() => {
    app = createApp({
      redis: redis.client(),
      logger: false,
      catalogueLatencyMs: 50,
      sessionSecret: 'x'.repeat(40),
    });
  });
  afterAll(() => app.locals.close());

  /** A logged-in visitor, past the login limiter (5 attempts a minute, shared by every test here). */
  async function loggedIn(username: string) {
    const admin = redis.plain();
    const keys = await admin.keys('demo:login-rl:*');
    if (keys.length > 0) await admin.del(...keys);
    const agent = request.agent(app);
    await agent.post('/api/login').send({ username, password: 'pw' }).expect(200);
    return agent;
  }

  it('serves the live page with a CSP that forbids inline scripts and styles', async () => {
    const res = await request(app).get('/').expect(200);
    expect(res.text).toContain('express-redis-kit demo');
    const csp = res.headers['content-security-policy'];
    expect(csp).toMatch(/script-src 'self'/);
    expect(csp).toMatch(/style-src 'self'/);
    expect(csp).not.toMatch(/unsafe-inline/);
    // Served over plain http: a browser that opened it by a LAN address would fetch app.js over https.
    expect(csp).not.toMatch(/upgrade-insecure-requests/);
    await request(app)
      .get('/app.js')
      .expect(200)
      .expect('Content-Type', /javascript/);
  });

  it('caches products: MISS then HIT with the same body, and a PUT invalidates by tag', async () => {
    const first = await request(app).get('/api/products/2').expect(200);
    expect(first.headers['x-cache']).toBe('MISS');
    const second = await request(app).get('/api/products/2').expect(200);
    expect(second.headers['x-cache']).toBe('HIT');
    expect(second.body.builtAt).toBe(first.body.builtAt);
    // Writes need a login.
    await request(app).put('/api/products/2').send({ price: 9.5 }).expect(401);
    expect((await request(app).get('/api/products/2').expect(200)).headers['x-cache']).toBe('HIT');
    const editor = await loggedIn('editor');
    await editor.put('/api/products/2').send({ price: 9.5 }).expect(200);
    const third = await request(app).get('/api/products/2').expect(200);
    expect(third.headers['x-cache']).toBe('MISS');
    expect(third.body.product.price).toBe(9.5);
  });

  it('shows a price change made through one demo process on another sharing the Redis (the catalogue is not per process)', async () => {
    const other = createApp({
      redis: redis.client(),
      logger: false,
      catalogueLatencyMs: 10,
      sessionSecret: 'x'.repeat(40),
    });
    try {
      expect((await request(other).get('/api/products/6').expect(200)).body.product.price).toBe(40);
      const editor = await loggedIn('editor');
      await editor.put('/api/products/6').send({ price: 1.23 }).expect(200);
      // The other process refills the cache from the shared catalogue, not from a stale copy of its own.
      const there = await request(other).get('/api/products/6').expect(200);
      expect(there.body.product.price).toBe(1.23);
      expect((await request(app).get('/api/products/6').expect(200)).body.product.price).toBe(1.23);
    } finally {
      await other.locals.close();
    }
  });

  it('caches the public catalogue for logged-in visitors too (their rolling session cookie is not in the way)', async () => {
    const reader = await loggedIn('reader');
    expect((await reader.get('/api/products/4').expect(200)).headers['x-cache']).toBe('MISS');
    const again = await reader.get('/api/products/4').expect(200);
    expect(again.headers['x-cache']).toBe('HIT');
    expect(again.headers['set-cookie']).toBeUndefined();
    // Their session still works on the routes that use it.
    expect((await reader.get('/api/me').expect(200)).body).toMatchObject({ userId: 'reader' });
  });

  it('answers unknown products with 404 problem+json, and bad prices with 400', async () => {
    const res = await request(app).get('/api/products/999').expect(404);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    const editor = await loggedIn('editor');
    for (const price of ['free', '12', 1e308, -1]) {
      await editor.put('/api/products/1').send({ price }).expect(400);
    }
  });

  it('builds a report once and serves it from cache.wrap afterwards', async () => {
    const [a, b] = await Promise.all([
      request(app).get('/api/reports/2031'),
      request(app).get('/api/reports/2031'),
    ]);
    expect(a.body.builtAt).toBe(b.body.builtAt);
    const c = await request(app).get('/api/reports/2031').expect(200);
    expect(c.body.builtAt).toBe(a.body.builtAt);
    await request(app).get('/api/reports/abc').expect(400);
  });

  it('throttles /api/ping with RateLimit headers, then 429 + Retry-After', async () => {
    const agent = request(app);
    let last = await agent.get('/api/ping');
    expect(last.headers.ratelimit).toBeDefined();
    expect(last.headers['ratelimit-policy']).toBeDefined();
    for (let i = 0; i < 12; i++) last = await agent.get('/api/ping');
    expect(last.status).toBe(429);
    expect(Number(last.headers['retry-after'])).toBeGreaterThan(0);
    expect(last.headers['content-type']).toMatch(/problem\+json/);
  });

  it('logs in (cookie session), shows me and the session list, and logs out', async () => {
    const agent = request.agent(app);
    await agent.get('/api/me').expect(401);
    await agent.post('/api/login').send({ username: 'ada', password: 'pw' }).expect(200);
    expect((await agent.get('/api/me').expect(200)).body.userId).toBe('ada');
    const list = await agent.get('/api/sessions').expect(200);
    expect(list.body.sessions).toHaveLength(1);
    expect(list.body.sessions[0].current).toBe(true);
    await agent.post('/api/logout').expect(200);
    await agent.get('/api/me').expect(401);
  });

  it('logs out every device of a user', async () => {
    const phone = request.agent(app);
    const laptop = request.agent(app);
    await phone.post('/api/login').send({ username: 'grace', password: 'pw' }).expect(200);
    await laptop.post('/api/login').send({ username: 'grace', password: 'pw' }).expect(200);
    expect((await laptop.get('/api/sessions')).body.sessions).toHaveLength(2);
    expect((await phone.post('/api/logout-all').expect(200)).body.ended).toBe(2);
    await laptop.get('/api/me').expect(401);
  });

  it('keeps at most 256 characters of a User-Agent in the session: the header is as long as the client likes', async () => {
    const admin = redis.plain();
    const limited = await admin.keys('demo:login-rl:*');
    if (limited.length > 0) await admin.del(...limited);
    await request(app)
      .post('/api/login')
      .set('User-Agent', `ua-${'u'.repeat(15_000)}`)
      .send({ username: 'uma', password: 'pw' })
      .expect(200);
    let longest = 0;
    for (const key of await admin.keys('demo:*')) {
      const type = await admin.type(key);
      const values =
        type === 'hash'
          ? Object.values(await admin.hgetall(key))
          : type === 'string'
            ? [await admin.get(key)]
            : [];
      for (const value of values) if (value?.includes('ua-u')) longest = Math.max(longest, value.length);
    }
    expect(longest).toBeGreaterThan(0);
    expect(longest).toBeLessThan(1000);
  });

  it('rejects empty passwords with 400', async () => {
    await request(app).post('/api/login').send({ username: 'ada', password: '' }).expect(400);
  });

  it('creates an order once per Idempotency-Key and replays it, and publishes order.created', async () => {
    await request(app).post('/api/orders').set('Idempotency-Key', 'k-anon').send({ item: 'x' }).expect(401);
    const agent = await loggedIn('linus');
    const listener = redis.plain();
    const seen: string[] = [];
    await listener.subscribe('demo:events');
    listener.on('message', (_c, m) => seen.push(m));
    const first = await agent
      .post('/api/orders')
      .set('Idempotency-Key', 'order-1')
      .send({ item: 'Tamper', quantity: 2 })
      .expect(201);
    const again = await agent
      .post('/api/orders')
      .set('Idempotency-Key', 'order-1')
      .send({ item: 'Tamper', quantity: 2 })
      .expect(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.id).toBe(first.body.id);
    await agent
      .post('/api/orders')
      .set('Idempotency-Key', 'order-1')
      .send({ item: 'Scale', quantity: 1 })
      .expect(422);
    await new Promise((r) => setTimeout(r, 100));
    const published = seen.filter((m) => m.includes(first.body.id));
    expect(published).toHaveLength(1);
    // The feed is public: it says what was ordered, not who ordered it.
    expect(published[0]).not.toContain('linus');
    expect(first.body.userId).toBe('linus');
  });

  it('streams order events over SSE', async () => {
    const server = app.listen(0);
    try {
      const { port } = server.address() as { port: number };
      const controller = new AbortController();
      const res = await fetch(`http://127.0.0.1:${port}/api/events`, { signal: controller.signal });
      expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
      const reader = res.body!.getReader();
      await reader.read(); // ": connected"
      await new Promise((r) => setTimeout(r, 100));
      await redis
        .plain()
        .publish('demo:events', JSON.stringify({ type: 'order.created', order: { id: 'o-1' } }));
      let received = '';
      while (!received.includes('o-1')) received += new TextDecoder().decode((await reader.read()).value);
      expect(received).toMatch(/event: message\ndata: .*"order.created"/);
      controller.abort();
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('answers HEAD /api/events at once with the stream headers and no body', async () => {
    const res = await request(app).head('/api/events').timeout(2000).expect(200);
    expect(res.headers['content-type']).toMatch(/text\/event-stream/);
  });

  it('keeps session cookies and bearer tokens out of the request log, and opens no live feed once closing', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
    const logged = createApp({
      redis: redis.client(),
      logger,
      catalogueLatencyMs: 10,
      sessionSecret: 'y'.repeat(40),
    });
    try {
      const admin = redis.plain();
      const keys = await admin.keys('demo:login-rl:*');
      if (keys.length > 0) await admin.del(...keys);
      const login = await request(logged)
        .post('/api/login')
        .send({ username: 'ada', password: 'pw' })
        .expect(200);
      const cookie = String(login.headers['set-cookie']).split(';')[0]!;
      await request(logged)
        .get('/api/me')
        .set('Cookie', cookie)
        .set('Authorization', 'Bearer tok-s3cret')
        .expect(200);
      const log = lines.join('');
      expect(log).toContain('/api/me');
      expect(log).toContain('[redacted]');
      expect(log).not.toContain(cookie.split('=')[1]!);
      expect(log).not.toContain('tok-s3cret');
    } finally {
      await logged.locals.close();
    }
    // A keep-alive connection may still bring a request while the server drains.
    const res = await request(logged).get('/api/events').timeout(2000).expect(503);
    expect(res.headers.connection).toBe('close');
  });

  it('keeps a leaderboard in a sorted set', async () => {
    await request(app).post('/api/leaderboard/ada').send({ points: 10 }).expect(200);
    await request(app).post('/api/leaderboard/bob').send({ points: 30 }).expect(200);
    const res = await request(app).post('/api/leaderboard/ada').send({ points: 5 }).expect(200);
    expect(res.body.score).toBe(15);
    expect((await request(app).get('/api/leaderboard')).body.top.slice(0, 2)).toEqual([
      { player: 'bob', score: 30 },
      { player: 'ada', score: 15 },
    ]);
    await request(app).post('/api/leaderboard/ada').send({ points: -4 }).expect(400);
  });

  it('keeps only the top BOARD_SIZE players: anyone may post a new name', async () => {
    const admin = redis.plain();
    const filler = Array.from({ length: BOARD_SIZE }, (_, i) => [1000 + i, `filler${i}`]).flat();
    await admin.zadd('demo:leaderboard', ...filler);
    await request(app).post('/api/leaderboard/newcomer').send({ points: 1 }).expect(200);
    expect(await admin.zcard('demo:leaderboard')).toBe(BOARD_SIZE);
    expect(await admin.zscore('demo:leaderboard', 'newcomer')).toBeNull();
    expect(await admin.zscore('demo:leaderboard', `filler${BOARD_SIZE - 1}`)).not.toBeNull();
    await admin.del('demo:leaderboard');
  });

  it('refuses a write a browser sends from another origin (another port, a sibling subdomain): SameSite=Lax does not', async () => {
    const agent = await loggedIn('csrf-victim');
    // An empty form POST needs no JSON body: logging out everywhere is one click away.
    await agent.post('/api/logout-all').set('Sec-Fetch-Site', 'same-site').expect(403);
    await agent.post('/api/logout-all').set('Origin', 'http://localhost:1').expect(403);
    await agent.post('/api/logout-all').set('Origin', 'null').expect(403);
    expect((await agent.get('/api/me').expect(200)).body.userId).toBe('csrf-victim');
    // The page itself, and clients that are not browsers, are let through.
    const res = await agent
      .post('/api/orders')
      .set('Sec-Fetch-Site', 'same-origin')
      .set('Idempotency-Key', 'csrf-ok-1')
      .send({ item: 'Mug', quantity: 1 });
    expect(res.status).toBe(201);
    await agent.post('/api/logout-all').expect(200);
  });

  it('lets the page write through a trusted proxy that forwards another host (Origin matches X-Forwarded-Host)', async () => {
    const proxied = createApp({ redis: redis.client(), logger: false, sessionSecret: 'x'.repeat(40) });
    proxied.set('trust proxy', 1);
    try {
      const admin = redis.plain();
      const keys = await admin.keys('demo:login-rl:*');
      if (keys.length > 0) await admin.del(...keys);
      const res = await request(proxied)
        .post('/api/login')
        .set({ 'X-Forwarded-Host': 'demo.lan:8080', Origin: 'http://demo.lan:8080' })
        .send({ username: 'proxied', password: 'pw' });
      expect(res.status).toBe(200);
      await request(proxied)
        .post('/api/logout')
        .set({ 'X-Forwarded-Host': 'demo.lan:8080', Origin: 'http://evil.lan:8080' })
        .expect(403);
    } finally {
      await proxied.locals.close();
    }
  });

  it('answers malformed JSON with 400 problem+json, oversize bodies with 413, unknown routes with 404 JSON', async () => {
    const bad = await request(app)
      .post('/api/login')
      .set('Content-Type', 'application/json')
      .send('{"username":')
      .expect(400);
    expect(bad.headers['content-type']).toMatch(/problem\+json/);
    expect(bad.body.detail).toMatch(/not valid JSON/);
    expect(bad.text).not.toMatch(/at .*\.ts:\d+/);
    await request(app)
      .post('/api/login')
      .send({ username: 'a', password: 'x'.repeat(20_000) })
      .expect(413);
    const charset = await request(app)
      .post('/api/login')
      .set('Content-Type', 'application/json; charset=latin-9')
      .send('{}')
      .expect(415);
    expect(charset.body).toMatchObject({ status: 415, title: 'Unsupported Media Type' });
    const wrongMethod = await request(app).delete('/api/products/1').expect(405);
    expect(wrongMethod.headers.allow).toBe('GET, PUT, HEAD, OPTIONS');
    expect(wrongMethod.body).toMatchObject({ status: 405, title: 'Method Not Allowed' });
    expect((await request(app).get('/api/orders').expect(405)).headers.allow).toBe('POST, OPTIONS');
    expect((await request(app).options('/api/me').expect(204)).headers.allow).toBe('GET, HEAD, OPTIONS');
    await request(app).post('/healthz').expect(405);
    // The page and its files too (served by express.static, which only knows GET and HEAD).
    expect((await request(app).post('/').expect(405)).headers.allow).toBe('GET, HEAD, OPTIONS');
    expect((await request(app).options('/').expect(204)).headers.allow).toBe('GET, HEAD, OPTIONS');
    await request(app).delete('/app.js').expect(405);
    await request(app).get('/').expect(200);
    const missing = await request(app).get('/nope').expect(404);
    expect(missing.body).toMatchObject({ status: 404, title: 'Not Found' });
  });

  it('exposes Prometheus metrics counted from the kit events', async () => {
    await request(app).get('/api/products/3');
    await request(app).get('/api/products/3');
    const res = await request(app).get('/metrics').expect(200);
    expect(res.headers['content-type']).toMatch(/text\/plain/);
    expect(res.text).toMatch(/express_redis_kit_events_total\{component="cache",type="(l1-)?hit"\} [1-9]/);
    expect(res.text).toMatch(/express_redis_kit_events_total\{component="rate-limit",type="denied"\} [1-9]/);
    expect(res.text).toMatch(/express_redis_kit_redis_call_duration_seconds_bucket/);
  });

  describe('under a Redis that refuses writes', () => {
    afterEach(async () => {
      const admin = redis.plain();
      await admin.config('SET', 'maxmemory', '0');
      await admin.replicaof('NO', 'ONE');
    });

    const routes = [
      [
        'POST /api/leaderboard/:player',
        (a: Express) => request(a).post('/api/leaderboard/ada').send({ points: 3 }),
      ],
      [
        'POST /api/login',
        (a: Express) => request(a).post('/api/login').send({ username: 'ada', password: 'pw' }),
      ],
    ] as const;
    const refusals = [
      [
        'out of memory',
        async () => {
          const admin = redis.plain();
          await admin.config('SET', 'maxmemory-policy', 'noeviction');
          await admin.config('SET', 'maxmemory', '1');
        },
      ],
      // What the app's connection meets after a failover behind one address, until it reconnects.
      ['a read-only replica', () => redis.plain().replicaof('127.0.0.1', '1')],
    ] as const;

    it.each(
      routes.flatMap(([route, send]) => refusals.map(([state, make]) => [route, state, send, make] as const)),
    )('%s answers 503 with Retry-After when Redis is %s', async (_route, _state, send, make) => {
      await make();
      const res = await send(app);
      expect([res.status, res.headers['retry-after'], res.headers['content-type']]).toEqual([
        503,
        expect.any(String),
        expect.stringMatching(/problem\+json/),
      ]);
    });
  });
});
