import express, { type Request } from 'express';
import helmet from 'helmet';
import type Redis from 'ioredis';
import request from 'supertest';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';
import { useTcpProxy } from '../helpers/tcp-proxy';

const redis = useRedisServer();
const proxy = useTcpProxy(() => redis.server.port);
let admin: Redis;
beforeAll(() => {
  admin = redis.plain();
});
beforeEach(async () => {
  await admin.flushall();
});

const SECRET = 's'.repeat(40);
const who = (req: Request) => String(req.headers['x-client'] ?? req.ip);

/** The README's app: sessions app-wide, an app-wide limiter (all defaults), idempotent orders. */
function app(client: Redis) {
  const sessions = redisSession({ redis: client, secret: SECRET });
  const a = express();
  a.use(helmet());
  a.use(express.json());
  a.use(sessions);
  // Defaults: failMode 'open' ("availability over throttling"), timeout 250 ms. Keyed per client.
  a.use('/api', rateLimit({ redis: client, limit: 100, window: '1m', key: who }));
  a.get('/api/me', (req, res) => {
    res.json({ user: req.session.userId ?? null });
  });
  a.post('/api/orders', idempotency({ redis: client, scope: (req) => req.session.userId }), (_req, res) => {
    res.status(201).json({ ok: true });
  });
  a.post('/login', async (req, res) => {
    await sessions.login(req, { userId: 'u1' });
    res.json({ ok: true });
  });
  a.use(sessions.handleErrors);
  return a;
}

describe('Redis slower than rateLimit timeout (250 ms) but well within the others (500 ms)', () => {
  it("the limiter's timeouts (it fails open) do not open the breaker the sessions and idempotency share: they answer", async () => {
    // Log in against a fast connection; the cookie works on every instance.
    const fast = app(admin);
    const login = await request(fast).post('/login');
    const cookie = (login.headers['set-cookie'] as unknown as string[])[0]!.split(';')[0]!;

    // Every reply now takes 300 ms: Redis is slow, not down.
    const slowClient = await proxy({ delayMs: 300 });
    await slowClient.ping(); // connected and ready
    const slow = app(slowClient);
    const me = await request(slow).get('/api/me').set('Cookie', cookie);
    expect([me.status, me.body.title]).toEqual([200, undefined]); // one request alone: session read 300 ms OK, limiter fails open

    // A small burst of six anonymous visitors (no session read for them).
    const burst = await Promise.all(
      Array.from({ length: 6 }, (_, i) => request(slow).get('/api/me').set('x-client', `c${i}`)),
    );
    expect(burst.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);

    // The limiter failed open for all six (as documented); its late replies count as answers, so the
    // breaker every middleware on this client shares stays closed for the logged-in user's next calls.
    const after = await request(slow).get('/api/me').set('Cookie', cookie).set('x-client', 'c0');
    const order = await request(slow)
      .post('/api/orders')
      .set('Cookie', cookie)
      .set('x-client', 'c0')
      .set('Idempotency-Key', 'o-1')
      .send({ item: 'x' });
    // Redis answers every call within the session's and idempotency's 500 ms timeout.
    expect({ me: [after.status, after.body.title], order: [order.status, order.body.title] }).toEqual({
      me: [200, undefined],
      order: [201, undefined],
    });
  });
});
