import express from 'express';
import request from 'supertest';
import type { RedisClient } from '../../lib/client';
import { type RateLimitOptions, rateLimit } from '../../lib/rate-limit';
import { stepWallClockBack } from '../helpers/clock';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { sleep } from './fixtures/http';

function appWith(limiter: express.RequestHandler, status = 200) {
  const app = express();
  app.get('/', limiter, (req, res) => {
    res.status(Number(req.query.status ?? status)).json(req.rateLimit ?? null);
  });
  return app;
}

const byClient = (req: express.Request) => String(req.headers['x-client'] ?? 'anonymous');

// A loaded test machine must not turn into fail-open passes: wait long, and fail closed if ever.
const patient = { timeout: 5000, failMode: 'closed' } as const;

/** Calls per Redis command since the server started (INFO commandstats). */
async function commandCalls(redis: RedisClient): Promise<Record<string, number>> {
  const info = (await redis.info('commandstats')) as string;
  const calls: Record<string, number> = {};
  for (const match of info.matchAll(/cmdstat_([^:]+):calls=(\d+)/g)) calls[match[1]!] = Number(match[2]);
  return calls;
}

function delta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, n] of Object.entries(after)) {
    const d = n - (before[name] ?? 0);
    if (d > 0 && name !== 'info') out[name] = d;
  }
  return out;
}

describe('rateLimit features', () => {
  const redis = useRedisServer();
  const limiter = (options: Omit<RateLimitOptions, 'redis'>, client: RedisClient = redis.plain()) =>
    rateLimit({ key: byClient, ...patient, ...options, redis: client });

  describe('headers', () => {
    it('draft-8 (default): RateLimit-Policy and RateLimit with the named quota, Retry-After on 429', async () => {
      const app = appWith(limiter({ limit: 2, window: '1m', algorithm: 'fixed-window', name: 'h8' }));
      const first = await request(app).get('/').set('x-client', 'h8');
      expect(first.headers['ratelimit-policy']).toBe('"2-in-1m";q=2;w=60');
      expect(first.headers.ratelimit).toMatch(/^"2-in-1m";r=1;t=([1-9]|[1-5]\d|60)$/);
      await request(app).get('/').set('x-client', 'h8');
      const denied = await request(app).get('/').set('x-client', 'h8');
      expect(denied.status).toBe(429);
      expect(denied.headers.ratelimit).toMatch(/^"2-in-1m";r=0;t=\d+$/);
      expect(Number(denied.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(Number(denied.headers['retry-after'])).toBeLessThanOrEqual(60);
      expect(denied.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(denied.body).toMatchObject({
        type: 'urn:express-redis-kit:problem:rate-limited',
        status: 429,
        title: 'Too Many Requests',
      });
    });

    it('draft-8 lists every policy in both fields', async () => {
      const app = appWith(
        limiter({
          policies: [
            { limit: 5, window: '1s', name: 'burst' },
            { limit: 100, window: '1h', name: 'hourly', algorithm: 'gcra' },
          ],
          name: 'h8multi',
        }),
      );
      const res = await request(app).get('/').set('x-client', 'h8m');
      expect(res.headers['ratelimit-policy']).toBe('"burst";q=5;w=1, "hourly";q=100;w=3600');
      expect(res.headers.ratelimit).toMatch(/^"burst";r=4;t=1, "hourly";r=99;t=36$/);
      expect(res.body).toMatchObject({ policy: 'burst', limit: 5, remaining: 4, used: 1 });
    });

    it('draft-7: RateLimit-Policy and a combined RateLimit field', async () => {
      const app = appWith(limiter({ limit: 10, window: '1m', headers: 'draft-7', name: 'h7' }));
      const res = await request(app).get('/').set('x-client', 'h7');
      expect(res.headers['ratelimit-policy']).toBe('10;w=60');
      expect(res.headers.ratelimit).toBe('limit=10, remaining=9, reset=60');
    });

    it('draft-6: RateLimit-Limit / -Remaining / -Reset', async () => {
      const app = appWith(limiter({ limit: 10, window: '1m', headers: 'draft-6', name: 'h6' }));
      const res = await request(app).get('/').set('x-client', 'h6');
      expect(res.headers['ratelimit-policy']).toBe('10;w=60');
      expect(res.headers['ratelimit-limit']).toBe('10');
      expect(res.headers['ratelimit-remaining']).toBe('9');
      expect(res.headers['ratelimit-reset']).toBe('60');
    });

    it('legacy: X-RateLimit-* with the reset as a Unix time in seconds', async () => {
      const app = appWith(limiter({ limit: 10, window: '1m', headers: 'legacy', name: 'hl' }));
      const res = await request(app).get('/').set('x-client', 'hl');
      expect(res.headers['x-ratelimit-limit']).toBe('10');
      expect(res.headers['x-ratelimit-remaining']).toBe('9');
      const reset = Number(res.headers['x-ratelimit-reset']);
      expect(reset).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) + 55);
      expect(reset).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 61);
      expect(res.headers.ratelimit).toBeUndefined();
    });

    it('false: no rate-limit headers, but Retry-After still on 429', async () => {
      const app = appWith(limiter({ limit: 1, window: '1m', headers: false, name: 'hn' }));
      const ok = await request(app).get('/').set('x-client', 'hn');
      expect(Object.keys(ok.headers).filter((h) => h.includes('ratelimit'))).toEqual([]);
      const denied = await request(app).get('/').set('x-client', 'hn');
      expect(denied.status).toBe(429);
      expect(denied.headers['retry-after']).toBeDefined();
    });
  });

  describe('responses', () => {
    it('statusCode, message and handler customise the denial', async () => {
      const custom = appWith(
        limiter({ limit: 1, window: '1m', statusCode: 503, message: 'slow down', name: 'sc' }),
      );
      await request(custom).get('/').set('x-client', 'm');
      const denied = await request(custom).get('/').set('x-client', 'm');
      expect(denied.status).toBe(503);
      expect(denied.body).toMatchObject({ status: 503, title: 'Service Unavailable', detail: 'slow down' });

      const seen: unknown[] = [];
      const handled = appWith(
        limiter({
          limit: 1,
          window: '1m',
          name: 'hd',
          handler: (_req, res, _next, info) => {
            seen.push(info);
            res.status(info.statusCode).send(`wait ${info.retryAfter}`);
          },
        }),
      );
      await request(handled).get('/').set('x-client', 'h');
      const res = await request(handled).get('/').set('x-client', 'h');
      expect(res.status).toBe(429);
      expect(res.text).toMatch(/^wait \d+$/);
      expect(res.headers['retry-after']).toBeDefined();
      expect(seen[0]).toMatchObject({ limit: 1, remaining: 0, key: 'h', statusCode: 429 });
      expect((seen[0] as { message: string }).message).toMatch(
        /^Rate limit "1-in-1m" exceeded\. Retry in \d+ s\.$/,
      );
    });

    it('a handler written for express-rate-limit sends the message option as its body', async () => {
      const app = appWith(
        limiter({
          limit: 1,
          window: '1m',
          name: 'erl-handler',
          message: 'Slow down!',
          handler: (_req, res, _next, options) => {
            res.status(options.statusCode).send(options.message);
          },
        }),
      );
      await request(app).get('/').set('x-client', 'erl');
      const denied = await request(app).get('/').set('x-client', 'erl');
      expect(denied.status).toBe(429);
      expect(denied.text).toBe('Slow down!');
    });

    it('skip lets requests through uncounted, sync or async', async () => {
      const app = appWith(
        limiter({ limit: 1, window: '1m', name: 'skip', skip: async (req) => req.query.free === '1' }),
      );
      for (let i = 0; i < 3; i++)
        expect((await request(app).get('/?free=1').set('x-client', 's')).status).toBe(200);
      expect((await request(app).get('/').set('x-client', 's')).status).toBe(200);
      expect((await request(app).get('/').set('x-client', 's')).status).toBe(429);
    });

    it('passes key and cost function errors to next() instead of counting', async () => {
      const badKey = appWith(
        rateLimit({ ...patient, redis: redis.plain(), limit: 1, window: '1m', key: () => '' }),
      );
      expect((await request(badKey).get('/')).status).toBe(500);
      const objectKey = appWith(
        rateLimit({ ...patient, redis: redis.plain(), limit: 1, window: '1m', key: () => ({}) as never }),
      );
      expect((await request(objectKey).get('/')).status).toBe(500);
      const badCost = appWith(limiter({ limit: 5, window: '1m', name: 'bc', cost: () => 0.5 }));
      expect((await request(badCost).get('/')).status).toBe(500);
    });
  });

  describe('multiple policies', () => {
    it('allows only when every policy allows, and a denied request consumes from none', async () => {
      const mw = limiter({
        name: 'multi',
        policies: [
          { limit: 3, window: '1h', algorithm: 'fixed-window', name: 'small' },
          { limit: 5, window: '1h', algorithm: 'sliding-window', name: 'medium' },
          { limit: 8, window: '1h', algorithm: 'token-bucket', name: 'big' },
          { limit: 10, window: '1h', algorithm: 'gcra', name: 'huge' },
        ],
      });
      const app = appWith(mw);
      for (let i = 0; i < 3; i++)
        expect((await request(app).get('/').set('x-client', 'mp')).status).toBe(200);
      for (let i = 0; i < 5; i++) {
        const denied = await request(app).get('/').set('x-client', 'mp');
        expect(denied.status).toBe(429);
        expect(denied.body.policy).toBe('small');
      }
      const state = await mw.get('mp');
      expect(state.policies.map((p) => [p.policy, p.used])).toEqual([
        ['small', 3],
        ['medium', 3],
        ['big', 3],
        ['huge', 3],
      ]);
      // Freeing the small policy shows the others were never charged for the denials.
      await mw.reset('mp');
      for (let i = 0; i < 3; i++)
        expect((await request(app).get('/').set('x-client', 'mp')).status).toBe(200);
    });

    it('reports the policy that denies with the longest wait', async () => {
      const app = appWith(
        limiter({
          name: 'multi2',
          policies: [
            { limit: 2, window: '2s', name: 'short' },
            { limit: 2, window: '1h', name: 'long' },
          ],
        }),
      );
      await request(app).get('/').set('x-client', 'm2');
      await request(app).get('/').set('x-client', 'm2');
      const denied = await request(app).get('/').set('x-client', 'm2');
      expect(denied.status).toBe(429);
      expect(denied.body.policy).toBe('long');
      expect(Number(denied.headers['retry-after'])).toBeGreaterThan(3000);
    });
  });

  describe('refunds', () => {
    it('skipSuccessfulRequests gives the cost back after a successful response only', async () => {
      const mw = limiter({ limit: 2, window: '1h', name: 'rs', skipSuccessfulRequests: true });
      const app = appWith(mw);
      for (let i = 0; i < 5; i++)
        expect((await request(app).get('/').set('x-client', 'rs')).status).toBe(200);
      await sleep(50);
      expect((await mw.get('rs')).used).toBe(0);
      expect((await request(app).get('/?status=500').set('x-client', 'rs')).status).toBe(500);
      expect((await request(app).get('/?status=404').set('x-client', 'rs')).status).toBe(404);
      expect((await request(app).get('/').set('x-client', 'rs')).status).toBe(429);
    });

    it.each(['fixed-window', 'sliding-window', 'token-bucket', 'gcra'] as const)(
      'skipFailedRequests gives the cost back after a failed response (%s)',
      async (algorithm) => {
        const mw = limiter({
          limit: 2,
          window: '1h',
          algorithm,
          name: `rf-${algorithm}`,
          skipFailedRequests: true,
        });
        const app = appWith(mw);
        for (let i = 0; i < 4; i++) {
          expect((await request(app).get('/?status=502').set('x-client', 'rf')).status).toBe(502);
          await sleep(20);
        }
        const { events, stop } = captureEvents('rate-limit');
        try {
          expect((await request(app).get('/').set('x-client', 'rf')).status).toBe(200);
          expect((await request(app).get('/').set('x-client', 'rf')).status).toBe(200);
          expect((await request(app).get('/').set('x-client', 'rf')).status).toBe(429);
          expect(events.filter((e) => e.type === 'refund')).toHaveLength(0);
        } finally {
          stop();
        }
      },
    );
  });

  it.each(['sliding-window', 'gcra'] as const)(
    'a client whose every request was given back leaves no key in Redis (%s)',
    async (algorithm) => {
      const probe = redis.plain();
      const { waitFor, stop } = captureEvents('rate-limit');
      try {
        const app = appWith(
          limiter({ limit: 5, window: '1h', algorithm, name: `gone-${algorithm}`, skipFailedRequests: true }),
        );
        for (let i = 0; i < 3; i++)
          expect((await request(app).get('/?status=500').set('x-client', 'gone')).status).toBe(500);
        await waitFor('refund', 3);
        // Only refund markers may be left, and they expire within the limiter's timeout.
        const left = await probe.keys(`erk:rl:gone-${algorithm}:{gone}:*`);
        expect(left.filter((k) => !k.includes('}:x:'))).toEqual([]);
      } finally {
        stop();
      }
    },
  );

  describe('dryRun', () => {
    it('lets a request whose cost is above the limit through and reports it denied, instead of a 500', async () => {
      const { events, stop } = captureEvents('rate-limit');
      try {
        const app = appWith(
          limiter({ limit: 5, window: '1h', name: 'dry-cost', dryRun: true, cost: () => 9 }),
        );
        const res = await request(app).get('/').set('x-client', 'dry-cost');
        expect(res.status).toBe(200);
        expect(events).toContainEqual(
          expect.objectContaining({
            type: 'denied',
            name: 'dry-cost',
            key: 'dry-cost',
            cost: 9,
            dryRun: true,
          }),
        );
      } finally {
        stop();
      }
    });

    it('never blocks, but reports the denial in headers, req.rateLimit and a denied event', async () => {
      const { events, stop } = captureEvents('rate-limit');
      try {
        const app = appWith(limiter({ limit: 2, window: '1h', name: 'dry', dryRun: true }));
        const statuses = [];
        let last: request.Response | undefined;
        for (let i = 0; i < 4; i++) {
          last = await request(app).get('/').set('x-client', 'dry');
          statuses.push(last.status);
        }
        expect(statuses).toEqual([200, 200, 200, 200]);
        expect(last!.body).toMatchObject({ remaining: 0, used: 2 });
        expect(last!.headers.ratelimit).toMatch(/r=0/);
        expect(events.filter((e) => e.type === 'denied' && e.dryRun === true)).toHaveLength(2);
      } finally {
        stop();
      }
    });
  });

  describe('one decision per request', () => {
    it('a limiter mounted on the app and again on a router counts a request once, and warns once', async () => {
      const warnings: string[] = [];
      const mw = limiter({
        limit: 4,
        window: '1h',
        name: 'twice',
        logger: { warn: (m) => warnings.push(m) },
      });
      const app = express();
      const api = express.Router();
      app.use(mw);
      api.use(mw);
      api.get('/x', (req, res) => {
        res.json(req.rateLimit ?? null);
      });
      app.use('/api', api);
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++)
        statuses.push((await request(app).get('/api/x').set('x-client', 'twice')).status);
      expect(statuses).toEqual([200, 200, 200, 200, 429]);
      expect((await mw.get('twice')).used).toBe(4);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/reached this limiter twice.*counted once/);
    });
  });

  describe('admin API', () => {
    it('reset(key) clears every policy for the key on every instance; get(key) reads without counting', async () => {
      const client1 = redis.plain();
      const client2 = redis.plain();
      const one = limiter({ limit: 2, window: '1h', name: 'admin' }, client1);
      const two = limiter({ limit: 2, window: '1h', name: 'admin' }, client2);
      const app1 = appWith(one);
      const app2 = appWith(two);
      await request(app1).get('/').set('x-client', 'adm');
      await request(app2).get('/').set('x-client', 'adm');
      expect((await request(app1).get('/').set('x-client', 'adm')).status).toBe(429);
      expect(await one.get('adm')).toMatchObject({
        limit: 2,
        remaining: 0,
        used: 2,
        key: 'adm',
        policy: '2-in-1h',
      });
      expect((await two.get('adm')).used).toBe(2);
      await one.reset('adm');
      expect((await two.get('adm')).used).toBe(0);
      expect((await request(app1).get('/').set('x-client', 'adm')).status).toBe(200);
      expect((await request(app2).get('/').set('x-client', 'adm')).status).toBe(200);
    });

    it('reset() and get() reject a missing or non-text key with a TypeError instead of acting on "undefined"', async () => {
      const mw = limiter({ limit: 1, window: '1h', name: 'admin-keys' });
      const app = appWith(mw);
      await request(app).get('/').set('x-client', 'undefined');
      for (const bad of [undefined, null, '', { id: 'alice' }, Number.NaN]) {
        await expect(mw.reset(bad as never)).rejects.toThrow(/limiter\.reset\(key\) takes the client's key/);
        await expect(mw.get(bad as never)).rejects.toThrow(/limiter\.get\(key\) takes the client's key/);
      }
      // Nothing was reset under the key "undefined".
      expect((await request(app).get('/').set('x-client', 'undefined')).status).toBe(429);
      // A number is a key as its text (a user id): the request key "42" is reset by reset(42).
      await request(app).get('/').set('x-client', '42');
      expect((await mw.get(42)).used).toBe(1);
      await mw.reset(42);
      expect((await request(app).get('/').set('x-client', '42')).status).toBe(200);
    });

    it('limiters with different names keep separate counters', async () => {
      const a = appWith(limiter({ limit: 1, window: '1h', name: 'sep-a' }));
      const b = appWith(limiter({ limit: 1, window: '1h', name: 'sep-b' }));
      expect((await request(a).get('/').set('x-client', 'sep')).status).toBe(200);
      expect((await request(b).get('/').set('x-client', 'sep')).status).toBe(200);
    });

    it('every key it writes has a TTL and carries the client key as hash tag', async () => {
      const client = redis.plain();
      const app = appWith(
        limiter(
          {
            name: 'ttl',
            policies: [
              { limit: 5, window: '1h', algorithm: 'fixed-window' },
              { limit: 6, window: '1h', algorithm: 'sliding-window' },
              { limit: 7, window: '1h', algorithm: 'token-bucket' },
              { limit: 8, window: '1h', algorithm: 'gcra' },
            ],
          },
          client,
        ),
      );
      await request(app).get('/').set('x-client', 'ttl-client');
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await client.scan(cursor, 'MATCH', 'erk:rl:ttl:*', 'COUNT', 100);
        cursor = next;
        keys.push(...batch);
      } while (cursor !== '0');
      expect(keys).toHaveLength(4);
      for (const key of keys) {
        expect(key).toMatch(/^erk:rl:ttl:\{ttl-client\}:/);
        const ttl = await client.pttl(key);
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(3_600_000);
      }
    });
  });

  describe('client key', () => {
    function ipApp(mw: express.RequestHandler) {
      const app = express();
      app.set('trust proxy', true);
      app.get('/', mw, (req, res) => {
        res.json(req.rateLimit ?? null);
      });
      return app;
    }

    it('groups IPv6 clients by /56 so rotating addresses in one allocation share a limit', async () => {
      const mw = rateLimit({ ...patient, redis: redis.plain(), limit: 2, window: '1h', name: 'v6' });
      const app = ipApp(mw);
      const first = await request(app).get('/').set('x-forwarded-for', '2001:db8:abcd:1200::1');
      expect(first.body.key).toBe('2001:db8:abcd:1200::/56');
      expect((await request(app).get('/').set('x-forwarded-for', '2001:db8:abcd:12ff:ffff::9')).status).toBe(
        200,
      );
      expect((await request(app).get('/').set('x-forwarded-for', '2001:db8:abcd:1234::2')).status).toBe(429);
      // Next /56: a different client.
      expect((await request(app).get('/').set('x-forwarded-for', '2001:db8:abcd:1300::1')).status).toBe(200);
      // reset() accepts a raw address and groups it the same way.
      await mw.reset('2001:db8:abcd:1299::77');
      expect((await request(app).get('/').set('x-forwarded-for', '2001:db8:abcd:1200::5')).status).toBe(200);
    });

    it('takes a numeric key (a user id) as its text, the same counter reset(42) clears', async () => {
      const mw = limiter({ limit: 1, window: '1m', name: 'num', key: () => 42 });
      const app = appWith(mw);
      const first = await request(app).get('/');
      expect(first.status).toBe(200);
      expect(first.body.key).toBe('42');
      expect((await request(app).get('/')).status).toBe(429);
      await mw.reset(42);
      expect((await request(app).get('/')).status).toBe(200);
    });

    it('groups the IPv6 address a custom key returns (req.user?.id ?? req.ip) as the default key does', async () => {
      const mw = limiter({
        limit: 2,
        window: '1h',
        name: 'v6-custom',
        key: (req) => (req.headers['x-user'] as string | undefined) ?? req.ip ?? 'unknown',
      });
      const app = ipApp(mw);
      const first = await request(app).get('/').set('x-forwarded-for', '2001:db8:beef:1200::1');
      expect(first.body.key).toBe('2001:db8:beef:1200::/56');
      expect((await request(app).get('/').set('x-forwarded-for', '2001:db8:beef:12aa::2')).status).toBe(200);
      expect((await request(app).get('/').set('x-forwarded-for', '2001:db8:beef:12bb::3')).status).toBe(429);
      // Keys that are not exactly an address are the app's own, kept as they are.
      const user = await request(app).get('/').set('x-user', 'user:2001:db8::1');
      expect(user.body.key).toBe('user:2001:db8::1');
      // The admin API groups the same way.
      await mw.reset('2001:db8:beef:1234::9');
      expect((await request(app).get('/').set('x-forwarded-for', '2001:db8:beef:1200::1')).status).toBe(200);
    });

    it('keeps IPv4 (and IPv4-mapped IPv6) addresses whole; ipv6Subnet: false uses full addresses', async () => {
      const app = ipApp(rateLimit({ ...patient, redis: redis.plain(), limit: 5, window: '1h', name: 'v4' }));
      expect((await request(app).get('/').set('x-forwarded-for', '203.0.113.7')).body.key).toBe(
        '203.0.113.7',
      );
      expect((await request(app).get('/').set('x-forwarded-for', '::ffff:203.0.113.8')).body.key).toBe(
        '203.0.113.8',
      );
      const full = ipApp(
        rateLimit({
          ...patient,
          redis: redis.plain(),
          limit: 5,
          window: '1h',
          name: 'v6full',
          ipv6Subnet: false,
        }),
      );
      expect((await request(full).get('/').set('x-forwarded-for', '2001:DB8:0:0::1')).body.key).toBe(
        '2001:db8::1',
      );
      const wide = ipApp(
        rateLimit({ ...patient, redis: redis.plain(), limit: 5, window: '1h', name: 'v6w', ipv6Subnet: 48 }),
      );
      expect((await request(wide).get('/').set('x-forwarded-for', '2001:db8:abcd:ff00::1')).body.key).toBe(
        '2001:db8:abcd::/48',
      );
    });

    it('drops a port the proxy appended to the address (Azure), so each connection does not get its own limit', async () => {
      const warnings: string[] = [];
      const app = ipApp(
        rateLimit({
          ...patient,
          redis: redis.plain(),
          limit: 2,
          window: '1h',
          name: 'ports',
          logger: { warn: (m) => warnings.push(m) },
        }),
      );
      const statuses = [];
      for (const forwarded of ['203.0.113.7:1111', '203.0.113.7:2222', '203.0.113.7:3333']) {
        const res = await request(app).get('/').set('x-forwarded-for', forwarded);
        statuses.push(res.status);
        if (res.status === 200) expect(res.body.key).toBe('203.0.113.7');
      }
      expect(statuses).toEqual([200, 200, 429]);
      const v6 = await request(app).get('/').set('x-forwarded-for', '[2001:db8:abcd:1200::1]:4444');
      expect(v6.body.key).toBe('2001:db8:abcd:1200::/56');
      expect(warnings).toEqual([]);
      // Something that is no address at all is kept as it is, with one warning.
      await request(app).get('/').set('x-forwarded-for', 'unknown-host');
      await request(app).get('/').set('x-forwarded-for', 'other-host');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/req\.ip "unknown-host" is not an IP address/);
    });

    it('warns once when X-Forwarded-For arrives while trust proxy is off', async () => {
      const warnings: string[] = [];
      const app = appWith(
        rateLimit({
          redis: redis.plain(),
          limit: 50,
          window: '1h',
          name: 'xff',
          logger: { warn: (m) => warnings.push(m) },
        }),
      );
      await request(app).get('/').set('x-forwarded-for', '198.51.100.1');
      await request(app).get('/').set('x-forwarded-for', '198.51.100.2');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/X-Forwarded-For.*trust proxy/);
    });

    it('does not warn when trust proxy is on, and warns once when req.ip is missing', async () => {
      const warnings: string[] = [];
      const mw = rateLimit({
        redis: redis.plain(),
        limit: 50,
        window: '1h',
        name: 'noip',
        logger: { warn: (m) => warnings.push(m) },
      });
      const app = express();
      app.set('trust proxy', 1);
      app.get('/', mw, (_req, res) => {
        res.end('ok');
      });
      await request(app).get('/').set('x-forwarded-for', '198.51.100.1');
      expect(warnings).toHaveLength(0);
      // Two requests without an address (one request through the limiter twice is decided once).
      const fakeReq = { headers: {}, app, socket: {} } as unknown as express.Request;
      const otherReq = { headers: {}, app, socket: {} } as unknown as express.Request;
      const next = jest.fn();
      const res = Object.assign(Object.create(null), { setHeader() {}, once() {} }) as express.Response;
      await new Promise<void>((resolve) => {
        mw(fakeReq, res, () => resolve());
        mw(otherReq, res, next);
      });
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/req\.ip is missing/);
      expect(fakeReq.rateLimit?.key).toBe('unknown');
    });
  });

  describe('one round trip', () => {
    it('sends exactly one EVALSHA per decision, whatever the number of policies', async () => {
      const client = redis.plain();
      const probe = redis.plain();
      const app = appWith(
        limiter(
          {
            name: 'rt',
            denyCache: false,
            policies: [
              { limit: 10, window: '1s' },
              { limit: 30, window: '1h', algorithm: 'gcra' },
            ],
          },
          client,
        ),
      );
      await request(app).get('/').set('x-client', 'warm-up');
      // MONITOR tells commands sent by clients from those a script runs (source "lua").
      const monitor = await probe.monitor();
      const sent: string[] = [];
      monitor.on('monitor', (_time: string, args: string[], source: string) => {
        if (source !== 'lua') sent.push(String(args[0]).toLowerCase());
      });
      const before = await commandCalls(probe);
      for (let i = 0; i < 20; i++) await request(app).get('/').set('x-client', 'rt');
      const after = await commandCalls(probe);
      await sleep(100);
      monitor.disconnect();
      expect(sent.filter((c) => c !== 'info')).toEqual(Array(20).fill('evalsha'));
      // Cross-check with INFO commandstats: 20 EVALSHA, no EVAL (the script stayed cached), 20 TIME inside.
      const d = delta(before, after);
      expect(d.evalsha).toBe(20);
      expect(d.eval).toBeUndefined();
      expect(d.time).toBe(20);
    });

    it('answers repeat offenders from the deny cache with no Redis command, and never lets one through', async () => {
      const client = redis.plain();
      const probe = redis.plain();
      const { events, stop } = captureEvents('rate-limit');
      try {
        const app = appWith(limiter({ name: 'dc', limit: 3, window: '1h' }, client));
        for (let i = 0; i < 3; i++)
          expect((await request(app).get('/').set('x-client', 'dc')).status).toBe(200);
        expect((await request(app).get('/').set('x-client', 'dc')).status).toBe(429);
        const before = await commandCalls(probe);
        for (let i = 0; i < 10; i++) {
          const res = await request(app).get('/').set('x-client', 'dc');
          expect(res.status).toBe(429);
          expect(res.headers.ratelimit).toMatch(/r=0/);
          expect(Number(res.headers['retry-after'])).toBeGreaterThan(3000);
        }
        expect(delta(before, await commandCalls(probe))).toEqual({});
        // (commandstats also counts commands inside scripts, so an empty delta means no script ran either.)
        expect(events.filter((e) => e.type === 'deny-cache-hit')).toHaveLength(10);
      } finally {
        stop();
      }
    });

    it('a heavier request is not answered from the deny cache with the wait of a lighter one', async () => {
      const app = appWith(
        limiter({
          name: 'dc-cost',
          limit: 10,
          window: '10s',
          algorithm: 'token-bucket',
          cost: (req) => Number(req.headers['x-cost'] ?? 1),
        }),
      );
      expect((await request(app).get('/').set('x-client', 'dcc').set('x-cost', '10')).status).toBe(200);
      const light = await request(app).get('/').set('x-client', 'dcc');
      expect(light.status).toBe(429);
      expect(light.headers['retry-after']).toBe('1');
      // Ten units take the whole window to come back, not one second.
      const heavy = await request(app).get('/').set('x-client', 'dcc').set('x-cost', '10');
      expect(heavy.status).toBe(429);
      expect(Number(heavy.headers['retry-after'])).toBeGreaterThanOrEqual(9);
    });

    it('a remembered denial ends when Redis said, counted from when the call was sent, however late its reply was read', async () => {
      const app = express();
      // With x-stall, the event loop is busy while the decision comes back: its reply is read late.
      app.use((req, _res, next) => {
        // Without coalescing the call leaves as the limiter runs, before this stall's turn comes.
        if (req.headers['x-stall']) {
          setImmediate(() => {
            const until = Date.now() + 900;
            while (Date.now() < until);
          });
        }
        next();
      });
      app.get(
        '/',
        limiter({ name: 'dc-late', limit: 2, window: 1000, algorithm: 'gcra', coalesce: false }),
        (_req, res) => {
          res.send('ok');
        },
      );
      for (let i = 0; i < 2; i++) await request(app).get('/').set('x-client', 'dcl');
      const denied = await request(app).get('/').set('x-client', 'dcl').set('x-stall', '1');
      expect(denied.status).toBe(429);
      // Redis said the next request could pass at most 500 ms after it decided: long past.
      expect((await request(app).get('/').set('x-client', 'dcl')).status).toBe(200);
    });

    it('a wall clock stepped back (NTP) does not stretch a remembered denial', async () => {
      let restoreClock = () => {};
      try {
        const app = appWith(limiter({ name: 'dc-clock', limit: 1, window: 1000, algorithm: 'fixed-window' }));
        expect((await request(app).get('/').set('x-client', 'dc-clock')).status).toBe(200);
        expect((await request(app).get('/').set('x-client', 'dc-clock')).status).toBe(429);
        restoreClock = stepWallClockBack();
        await sleep(2100);
        expect((await request(app).get('/').set('x-client', 'dc-clock')).status).toBe(200);
      } finally {
        restoreClock();
      }
    });

    it('the deny cache expires at the retry time, so the client gets its quota back on time', async () => {
      const app = appWith(limiter({ name: 'dc2', limit: 2, window: 1000, algorithm: 'gcra' }));
      await request(app).get('/').set('x-client', 'dc2');
      await request(app).get('/').set('x-client', 'dc2');
      expect((await request(app).get('/').set('x-client', 'dc2')).status).toBe(429);
      expect((await request(app).get('/').set('x-client', 'dc2')).status).toBe(429);
      await sleep(700);
      expect((await request(app).get('/').set('x-client', 'dc2')).status).toBe(200);
    });
  });

  describe('events', () => {
    it('emits allowed and denied with the component, key and policy', async () => {
      const { events, stop } = captureEvents('rate-limit');
      try {
        const app = appWith(limiter({ name: 'ev', limit: 1, window: '1h' }));
        await request(app).get('/').set('x-client', 'ev');
        await request(app).get('/').set('x-client', 'ev');
        const types = events.filter((e) => e.name === 'ev' && e.type !== 'redis-call').map((e) => e.type);
        expect(types).toEqual(['allowed', 'denied']);
        expect(events.find((e) => e.type === 'denied')).toMatchObject({
          component: 'rate-limit',
          key: 'ev',
          policy: '1-in-1h',
        });
      } finally {
        stop();
      }
    });
  });
});
