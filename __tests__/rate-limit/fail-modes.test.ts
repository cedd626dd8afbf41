import express from 'express';
import Redis from 'ioredis';
import request from 'supertest';
import { type KitEvent, onKitEvent } from '../../lib/events';
import { rateLimit } from '../../lib/rate-limit';
import { eventually, useRedisServer } from '../helpers/redis';
import { sleep } from './fixtures/http';

function appWith(limiter: express.RequestHandler) {
  const app = express();
  app.get('/', limiter, (_req, res) => {
    res.send('handler ran');
  });
  return app;
}

describe('rateLimit fail modes', () => {
  const redis = useRedisServer();
  const events: KitEvent[] = [];
  let stop: () => void;
  beforeAll(() => {
    stop = onKitEvent((e) => {
      if (e.component === 'rate-limit') events.push(e);
    });
  });
  afterAll(() => stop?.());
  beforeEach(() => {
    events.length = 0;
  });

  /** A user's own plain client, quiet about connection errors while the server is down. */
  function plainClient(): Redis {
    const client = redis.track(new Redis(redis.server.url, { retryStrategy: () => 50 }));
    client.on('error', () => {});
    return client;
  }

  async function ready(client: Redis) {
    await eventually(
      async () => (await client.ping().catch(() => '')) === 'PONG',
      'Redis to answer again',
      15_000,
    );
  }

  describe('Redis killed', () => {
    afterEach(async () => {
      await redis.server.restart();
    });

    it("failMode 'open' (default) lets requests through within the timeout, logs once per outage, emits fail-open", async () => {
      const warnings: string[] = [];
      const client = plainClient();
      const limiter = rateLimit({
        redis: client,
        limit: 1,
        window: '1h',
        key: (req) => String(req.headers['x-client']),
        timeout: 200,
        logger: { warn: (m) => warnings.push(m) },
      });
      const app = appWith(limiter);
      expect((await request(app).get('/').set('x-client', 'offender')).status).toBe(200);
      expect((await request(app).get('/').set('x-client', 'offender')).status).toBe(429);
      await redis.server.kill();
      // A client Redis already denied stays denied from the in-process deny cache.
      expect((await request(app).get('/').set('x-client', 'offender')).status).toBe(429);
      for (let i = 0; i < 5; i++) {
        const started = Date.now();
        const res = await request(app).get('/').set('x-client', 'someone');
        expect(res.status).toBe(200);
        expect(res.text).toBe('handler ran');
        expect(res.headers.ratelimit).toBeUndefined();
        // Never waits much longer than `timeout` (the margin absorbs a busy machine).
        expect(Date.now() - started).toBeLessThan(2000);
      }
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/Redis unavailable.*failing open/);
      expect(events.filter((e) => e.type === 'fail-open')).toHaveLength(5);

      await redis.server.restart();
      await ready(client);
      // The breaker may still be cooling down; once Redis answers, limiting resumes (fresh, empty server).
      await eventually(
        async () => (await request(app).get('/').set('x-client', 'later')).status === 429,
        'limiting to resume',
        10_000,
      );
      expect(events.some((e) => e.type === 'recovered')).toBe(true);
    });

    it("failMode 'closed' answers 503 + Retry-After as problem+json and never runs the handler", async () => {
      const client = plainClient();
      const app = appWith(
        rateLimit({
          redis: client,
          limit: 5,
          window: '1h',
          key: () => 'closed-kill',
          timeout: 200,
          failMode: 'closed',
          logger: { warn() {} },
        }),
      );
      expect((await request(app).get('/')).status).toBe(200);
      await redis.server.kill();
      const res = await request(app).get('/');
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBe('1');
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.body).toMatchObject({
        status: 503,
        type: 'urn:express-redis-kit:problem:rate-limit-unavailable',
      });
      expect(events.filter((e) => e.type === 'fail-closed')).toHaveLength(1);
    });
  });

  describe('Redis paused (CLIENT PAUSE)', () => {
    // A dry run never blocks: it fails open whatever failMode says.
    it.each([
      ['open', false, 200, 'open'],
      ['closed', false, 503, 'closed'],
      ['closed', true, 200, 'open'],
    ] as const)(
      "failMode '%s' (dryRun %s) answers %s within the timeout instead of waiting for Redis, failing %s",
      async (failMode, dryRun, status, failing) => {
        const client = plainClient();
        const admin = plainClient();
        const warnings: string[] = [];
        const app = appWith(
          rateLimit({
            redis: client,
            limit: 5,
            window: '1h',
            key: () => `pause-${failMode}-${dryRun}`,
            timeout: 150,
            failMode,
            dryRun,
            logger: { warn: (m: string) => warnings.push(m) },
          }),
        );
        expect((await request(app).get('/')).status).toBe(200);
        await admin.call('CLIENT', 'PAUSE', '1500', 'ALL');
        const started = Date.now();
        const res = await request(app).get('/');
        const took = Date.now() - started;
        expect(res.status).toBe(status);
        // Well before the pause ends: the limiter gave up at its own timeout.
        expect(took).toBeLessThan(1200);
        expect(events.some((e) => e.type === `fail-${failing}`)).toBe(true);
        expect(events.some((e) => e.type === `fail-${failing === 'open' ? 'closed' : 'open'}`)).toBe(false);
        expect(warnings.join('\n')).toMatch(
          new RegExp(`failing ${failing}${dryRun ? ' .*as in every dry run' : ''}`),
        );
        await sleep(1600);
        await ready(client);
      },
    );

    it('a flapping Redis (every other call too slow) is announced once, not once per flap', async () => {
      const client = plainClient();
      const admin = plainClient();
      const warnings: string[] = [];
      const app = appWith(
        rateLimit({
          redis: client,
          limit: 100,
          window: '1h',
          key: () => 'flapping',
          timeout: 100,
          logger: { warn: (m) => warnings.push(m) },
        }),
      );
      for (let flap = 0; flap < 3; flap++) {
        expect((await request(app).get('/')).status).toBe(200);
        await admin.call('CLIENT', 'PAUSE', '300', 'ALL');
        expect((await request(app).get('/')).status).toBe(200); // failed open
        await sleep(350);
        await ready(client);
      }
      expect((await request(app).get('/')).status).toBe(200);
      expect(events.filter((e) => e.type === 'fail-open')).toHaveLength(3);
      expect(events.filter((e) => e.type === 'recovered')).toHaveLength(3);
      expect(warnings).toHaveLength(1);
    });
  });
});
