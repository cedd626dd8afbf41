import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('cacheResponse and a Vary set in front of it', () => {
  it.each([
    [false, 'before the route'],
    [{ max: 10 }, 'before the route'],
    [false, 'as the headers go out'],
    [{ max: 10 }, 'as the headers go out'],
  ] as const)(
    "splits on Vary: Cookie set by auth middleware in front, so bob never gets alice's response (l1: %p, set %s)",
    async (l1, when) => {
      const app = express();
      app.use((req, res, next) => {
        (req as unknown as { user?: string }).user = /token=(\w+)/.exec(req.headers.cookie ?? '')?.[1];
        if (when === 'before the route') res.vary('Cookie');
        else {
          // As on-headers does: inside writeHead, after the route answered.
          const writeHead = res.writeHead;
          res.writeHead = function (this: express.Response, ...args: unknown[]) {
            this.vary('Cookie');
            return (writeHead as (...a: unknown[]) => express.Response).apply(this, args);
          } as typeof res.writeHead;
        }
        next();
      });
      app.use(cacheResponse({ redis: client, ttl: '1m', l1, sessionCookie: false, logger: quietLogger() }));
      app.get('/me', (req, res) => {
        res.json({ user: (req as unknown as { user?: string }).user ?? null });
      });
      const events = captureEvents('cache');
      try {
        expect((await request(app).get('/me').set('Cookie', 'token=alice')).body).toEqual({ user: 'alice' });
        await events.waitFor('store', 1);
        const bob = await request(app).get('/me').set('Cookie', 'token=bob');
        expect(bob.body).toEqual({ user: 'bob' });
        expect(bob.headers['x-cache']).toBe('MISS');
        await events.waitFor('store', 2);
        const alice = await request(app).get('/me').set('Cookie', 'token=alice');
        expect(alice.headers['x-cache']).toBe('HIT');
        expect(alice.body).toEqual({ user: 'alice' });
        expect(alice.headers.vary).toMatch(/cookie/i);
      } finally {
        events.stop();
      }
    },
  );

  it('serves each Accept-Language its own response when i18n middleware in front declares the Vary', async () => {
    const app = express();
    app.use((_req, res, next) => {
      res.vary('Accept-Language');
      next();
    });
    app.use(cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }));
    app.get('/greet', (req, res) => {
      res.send(req.acceptsLanguages('fr', 'en') === 'fr' ? 'Bonjour' : 'Hello');
    });
    const events = captureEvents('cache');
    try {
      expect((await request(app).get('/greet').set('Accept-Language', 'fr')).text).toBe('Bonjour');
      await events.waitFor('store', 1);
      expect((await request(app).get('/greet').set('Accept-Language', 'en')).text).toBe('Hello');
      await events.waitFor('store', 2);
      const fr = await request(app).get('/greet').set('Accept-Language', 'fr');
      const en = await request(app).get('/greet').set('Accept-Language', 'en');
      expect([fr.headers['x-cache'], fr.text]).toEqual(['HIT', 'Bonjour']);
      expect([en.headers['x-cache'], en.text]).toEqual(['HIT', 'Hello']);
    } finally {
      events.stop();
    }
  });
});

describe('cacheResponse with many different Vary headers', () => {
  it('answers a response varying on a 33rd header name from Redis at once, without waiting on a lock', async () => {
    const mw = cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() });
    const app = express();
    app.get('/v/:n', mw, (req, res) => {
      const name = `X-H${req.params.n}`;
      res.vary(name).send(`${req.params.n}:${req.headers[name.toLowerCase()]}`);
    });
    const events = captureEvents('cache');
    try {
      // Each response varies on its own header: the process learns names until its cap is reached.
      for (let n = 0; n < 40; n++) {
        await request(app).get(`/v/${n}`).set(`X-H${n}`, 'a');
        await events.waitFor('store', n + 1);
      }
      const started = Date.now();
      const hit = await request(app).get('/v/39').set('X-H39', 'a');
      expect(Date.now() - started).toBeLessThan(1000);
      expect([hit.headers['x-cache'], hit.text]).toEqual(['HIT', '39:a']);
      const other = await request(app).get('/v/39').set('X-H39', 'b');
      expect([other.headers['x-cache'], other.text]).toEqual(['MISS', '39:b']);
      expect(events.count('lock-wait')).toBe(0);
    } finally {
      events.stop();
    }
  });
});

describe('cacheResponse when a route changes the headers it varies on', () => {
  it.each([[{ max: 10 }], [false]] as const)(
    'does not serve a variant of the old Vary names (l1: %p)',
    async (l1) => {
      let by = 'accept-language';
      const mw = cacheResponse({ redis: client, ttl: '5m', l1, logger: quietLogger() });
      await mw.cache.ready();
      const app = express();
      app.get('/v', mw, (req, res) => {
        res.vary(by);
        res.json({ by, value: req.headers[by] ?? null });
      });
      const stored = captureEvents('cache');
      try {
        await request(app).get('/v').set('Accept-Language', 'en');
        await stored.waitFor('store', 1);
        // A flag switches negotiation to another header: Redis retires the old variants.
        by = 'x-region';
        await request(app).get('/v').set('Accept-Language', 'fr').set('X-Region', 'us');
        await stored.waitFor('store', 2);
      } finally {
        stored.stop();
      }
      // Its X-Region is the old variant's Accept-Language: it must not get that answer.
      const res = await request(app).get('/v').set('X-Region', 'en');
      expect(res.body).toEqual({ by: 'x-region', value: 'en' });
    },
  );
});
