import timeout from 'connect-timeout';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { redisSession } from '../../lib/session';
import { sleep, waitForKeys } from '../cache/helpers';
import { useFlushedClient, useRedisServer } from '../helpers/redis';

// The README promises Express 4.21+ as well as 5: the same middlewares on a real Express 4 app
// (devDependency `express4`), where its routing, body parsers and query parser differ from 5's.
const express = require('express4') as typeof import('express');

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

it('really runs Express 4', () => {
  expect(require('express4/package.json').version).toMatch(/^4\./);
});

describe('rateLimit on Express 4', () => {
  it('counts, sends the draft headers and answers 429 with problem+json', async () => {
    const app = express();
    app.use(rateLimit({ redis: client, limit: 2, window: '1m' }));
    app.get('/r', (_req, res) => {
      res.send('ok');
    });
    expect((await request(app).get('/r')).headers.ratelimit).toMatch(/r=1/);
    await request(app).get('/r');
    const denied = await request(app).get('/r');
    expect(denied.status).toBe(429);
    expect(denied.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(denied.headers['retry-after']).toMatch(/^\d+$/);
  });
});

describe('cacheResponse on Express 4', () => {
  function app() {
    let calls = 0;
    const a = express();
    a.get('/search', cacheResponse({ redis: client, ttl: '1m', l1: false }), (req, res) => {
      calls++;
      res.json({ sort: req.query.sort, calls });
    });
    a.get('/legacy', cacheResponse({ redis: client, ttl: '1m', l1: false }), (_req, res) => {
      calls++;
      // Express 4 takes a string status with only a deprecation warning.
      (res.status as unknown as (code: string) => typeof res)('200').send(`legacy ${calls}`);
    });
    return a;
  }

  it('serves a hit for the same query, and keeps apart two that qs merges into different arrays', async () => {
    const a = app();
    const first = await request(a).get('/search?sort=price&sort[]=date');
    expect(first.body.sort).toEqual(['price', 'date']);
    await waitForKeys(client, 'erk:c:*');
    expect((await request(a).get('/search?sort=price&sort[]=date')).headers['x-cache']).toBe('HIT');
    const swapped = await request(a).get('/search?sort[]=date&sort=price');
    expect(swapped.headers['x-cache']).toBe('MISS');
    expect(swapped.body.sort).toEqual(['date', 'price']);
  });

  it('serves one entry for the same object in any key order (page[size], page[number])', async () => {
    const a = app();
    await request(a).get('/search?page[size]=10&page[number]=2');
    await waitForKeys(client, 'erk:c:*');
    expect((await request(a).get('/search?page[number]=2&page[size]=10')).headers['x-cache']).toBe('HIT');
  });

  it("stores a response whose status was set as a string, as Express 4's res.status('200') allows", async () => {
    const a = app();
    expect((await request(a).get('/legacy')).text).toBe('legacy 1');
    await waitForKeys(client, 'erk:c:*');
    const hit = await request(a).get('/legacy');
    expect([hit.status, hit.headers['x-cache'], hit.text]).toEqual([200, 'HIT', 'legacy 1']);
  });

  it('answers a hit with a malformed Range with the whole 200, as on Express 5 (its range-parser 1.2 says 416)', async () => {
    const a = app();
    await request(a).get('/legacy');
    await waitForKeys(client, 'erk:c:*');
    const part = await request(a).get('/legacy').set('Accept-Encoding', 'identity').set('Range', 'bytes=0-5');
    expect([part.status, part.text]).toEqual([206, 'legacy']);
    for (const range of ['bytes=abc', 'bytes=x-y']) {
      const whole = await request(a).get('/legacy').set('Accept-Encoding', 'identity').set('Range', range);
      expect([range, whole.status, whole.headers['x-cache'], whole.text]).toEqual([
        range,
        200,
        'HIT',
        'legacy 1',
      ]);
    }
  });
});

describe('idempotency on Express 4', () => {
  function app() {
    const runs = { n: 0 };
    const a = express();
    // As the README sets it up: a JSON parser in front, which on Express 4 leaves req.body = {}
    // for a body it does not parse.
    a.use(express.json());
    a.post('/import', idempotency({ redis: client }), (req, res) => {
      runs.n++;
      if (req.readableEnded) {
        res.status(201).json({ bytes: 0, json: req.body });
        return;
      }
      let bytes = 0;
      req.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
      });
      req.on('end', () => {
        res.status(201).json({ bytes, json: req.body });
      });
    });
    return { a, runs };
  }

  it('tells unread uploads apart by type and size, so another upload with the key gets 422', async () => {
    const { a, runs } = app();
    const send = (type: string, body: string) =>
      request(a).post('/import').set('Idempotency-Key', 'imp-1').set('Content-Type', type).send(body);
    expect((await send('text/csv', 'a,b\n1,2\n')).status).toBe(201);
    const replay = await send('text/csv', 'a,b\n1,2\n');
    expect([replay.status, replay.headers['idempotent-replayed']]).toEqual([201, 'true']);
    expect((await send('text/csv', 'a,b\n1,2\n3,4\n5,6\n7,8\n')).status).toBe(422);
    expect((await send('application/json', '{}')).status).toBe(422);
    expect(runs.n).toBe(1);
  });

  it('still replays a parsed JSON {} body for the same JSON {}', async () => {
    const { a, runs } = app();
    const send = (body: string) =>
      request(a)
        .post('/import')
        .set('Idempotency-Key', 'imp-2')
        .set('Content-Type', 'application/json')
        .send(body);
    expect((await send('{}')).status).toBe(201);
    expect((await send('{}')).headers['idempotent-replayed']).toBe('true');
    expect(runs.n).toBe(1);
  });

  it('replays for the same object sent with its keys in another order', async () => {
    const a = express();
    a.post('/list', idempotency({ redis: client }), (req, res) => {
      res.status(201).json({ page: req.query.page });
    });
    expect(
      (await request(a).post('/list?page[size]=10&page[number]=2').set('Idempotency-Key', 'p1')).status,
    ).toBe(201);
    const retry = await request(a).post('/list?page[number]=2&page[size]=10').set('Idempotency-Key', 'p1');
    expect(retry.headers['idempotent-replayed']).toBe('true');
  });

  it('keeps apart two queries that qs merges into different arrays', async () => {
    const a = express();
    a.post('/charge', idempotency({ redis: client }), (req, res) => {
      res.status(201).json({ to: req.query.to });
    });
    const first = await request(a).post('/charge?to[0]=alice&to[]=bob').set('Idempotency-Key', 'c1');
    expect(first.body.to).toEqual(['alice', 'bob']);
    expect((await request(a).post('/charge?to[]=bob&to[0]=alice').set('Idempotency-Key', 'c1')).status).toBe(
      422,
    );
  });

  it("stores the handler's late answer after a connect-timeout 503, and replays it", async () => {
    const a = express();
    let runs = 0;
    let answered = false;
    a.use(timeout('100ms'));
    a.post('/slow', idempotency({ redis: client }), async (_req, res) => {
      runs++;
      await sleep(300);
      res.status(201).set('Location', '/slow/1').json({ run: runs });
      answered = true;
    });
    const send = () => request(a).post('/slow').set('Idempotency-Key', 'slow-1').send({ x: 1 });
    expect((await send()).status).toBe(503);
    expect((await send()).status).toBe(409);
    while (!answered) await sleep(20);
    let replay = await send();
    // The late answer is being stored meanwhile.
    for (let i = 0; replay.status === 409 && i < 100; i++) replay = await sleep(20).then(send);
    expect([replay.status, replay.headers['idempotent-replayed'], replay.body]).toEqual([
      201,
      'true',
      { run: 1 },
    ]);
    expect(replay.headers.location).toBe('/slow/1');
    expect(replay.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(runs).toBe(1);
  });
});

describe('redisSession on Express 4', () => {
  it('logs in, reads the session back by its cookie, and logs out', async () => {
    const sessions = redisSession({ redis: client, secret: 'x'.repeat(32), cookie: { secure: false } });
    const a = express();
    a.use(sessions);
    a.post('/login', async (req, res, next) => {
      try {
        await sessions.login(req, { userId: 'u1' });
        res.json({ ok: true });
      } catch (error) {
        next(error);
      }
    });
    a.get('/me', (req, res) => {
      res.json({ userId: req.session.userId ?? null });
    });
    a.post('/logout', async (req, res, next) => {
      try {
        await sessions.logout(req, res);
        res.status(204).end();
      } catch (error) {
        next(error);
      }
    });
    const login = await request(a).post('/login');
    const cookie = (login.headers['set-cookie'] as unknown as string[])[0]!.split(';')[0]!;
    expect((await request(a).get('/me').set('Cookie', cookie)).body).toEqual({ userId: 'u1' });
    expect((await request(a).post('/logout').set('Cookie', cookie)).status).toBe(204);
    await sleep(10);
    expect((await request(a).get('/me').set('Cookie', cookie)).body).toEqual({ userId: null });
  });
});
