import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { gunzipSync } from 'node:zlib';
import compression from 'compression';
import express from 'express';
import { defaultStoreStatus } from '../../lib';
import { idempotency } from '../../lib/idempotency';
import { eventually, useRedisServer } from '../helpers/redis';
import { freshKey, orderApp, send, sleep, useEvents, useServers } from './http';

const redisServer = useRedisServer();
const servers = useServers();
const events = useEvents();

/** An order route behind `idempotency()` whose handler answers `{ run: n }`, counting its runs. */
async function countingRoute() {
  const counter = { runs: 0 };
  const app = orderApp(idempotency({ redis: redisServer.client() }), (_req, res) => {
    counter.runs += 1;
    res.json({ run: counter.runs });
  });
  return { url: `${await servers.listen(app)}/orders`, counter };
}

describe('idempotency lifecycle', () => {
  it('runs the handler once and replays status, headers and body byte for byte with Idempotent-Replayed', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = orderApp(idempotency({ redis }), (req, res) => {
      runs += 1;
      res
        .status(201)
        .set('Location', '/orders/42')
        .set('X-Custom', 'yes')
        .json({ id: 42, run: runs, body: req.body });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const first = await send(url, { key, body: { item: 'book', qty: 1 } });
    const second = await send(url, { key, body: { item: 'book', qty: 1 } });

    expect(runs).toBe(1);
    expect(first.status).toBe(201);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(second.status).toBe(201);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(second.body.equals(first.body)).toBe(true);
    expect(second.headers.get('location')).toBe('/orders/42');
    expect(second.headers.get('x-custom')).toBe('yes');
    expect(second.headers.get('content-type')).toBe(first.headers.get('content-type'));
    expect(events.types()).toEqual(expect.arrayContaining(['first', 'stored', 'replay']));
  });

  it('does not bring back on the replay a header set in front that the handler removed', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = express();
    app.use((_req, res, next) => {
      res.set('Cache-Control', 'no-store');
      next();
    });
    app.post('/orders', idempotency({ redis }), (_req, res) => {
      runs += 1;
      res.removeHeader('Cache-Control');
      res.removeHeader('X-Powered-By');
      res.status(201).json({ ok: true });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const first = await send(url, { key });
    const second = await send(url, { key });
    expect(runs).toBe(1);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect([first.headers.get('cache-control'), first.headers.get('x-powered-by')]).toEqual([null, null]);
    expect([second.headers.get('cache-control'), second.headers.get('x-powered-by')]).toEqual([null, null]);
  });

  it("keeps every value of a name repeated in writeHead's list (two Link headers) on the answer and the replay", async () => {
    const app = orderApp(idempotency({ redis: redisServer.client() }), (_req, res) => {
      // Node 20 sent only the last one once any header was set (Express sets X-Powered-By).
      res.writeHead(201, [
        'Link',
        '</a.css>; rel=preload',
        'Link',
        '</b.js>; rel=preload',
        'Content-Type',
        'text/plain',
      ]);
      res.end('ok');
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const first = await send(url, { key, body: {} });
    const replay = await send(url, { key, body: {} });
    expect(first.headers.get('link')).toBe('</a.css>; rel=preload, </b.js>; rel=preload');
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.headers.get('link')).toBe('</a.css>; rel=preload, </b.js>; rel=preload');
    expect(replay.headers.get('content-type')).toBe('text/plain');
  });

  it('replays binary bodies (invalid UTF-8 included) byte for byte', async () => {
    const redis = redisServer.plain();
    const payload = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00, 0xc3]), randomBytes(4096)]);
    let runs = 0;
    const app = orderApp(idempotency({ redis }), (_req, res) => {
      runs += 1;
      res.type('application/octet-stream');
      res.write(payload.subarray(0, 100));
      res.end(payload.subarray(100));
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const first = await send(url, { key });
    const second = await send(url, { key });
    expect(runs).toBe(1);
    expect(first.body.equals(payload)).toBe(true);
    expect(second.body.equals(payload)).toBe(true);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
  });

  it("keeps the retry's own headers from middleware in front (request id, rate-limit counters) and replays the handler's, with its reason phrase", async () => {
    const redis = redisServer.client();
    let request = 0;
    const app = express();
    app.use((_req, res, next) => {
      request += 1;
      res.set('X-Request-Id', `req-${request}`).set('X-Shared', 'front');
      next();
    });
    app.post('/orders', idempotency({ redis }), (_req, res) => {
      res.statusMessage = 'Order Placed';
      res.status(201).set('X-Shared', 'handler').set('X-Order', '42').json({ id: 42 });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const first = await send(url, { key });
    const second = await send(url, { key });
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(first.headers.get('x-request-id')).toBe('req-1');
    expect(second.headers.get('x-request-id')).toBe('req-2');
    // What the handler set or changed is its answer, and comes back.
    expect(second.headers.get('x-shared')).toBe('handler');
    expect(second.headers.get('x-order')).toBe('42');
    expect(second.statusText).toBe('Order Placed');
  });

  it('keeps writeHead wrappers of middleware mounted after it (on-headers style, e.g. response-time)', async () => {
    const redis = redisServer.client();
    const responseTime: express.RequestHandler = (_req, res, next) => {
      const writeHead = res.writeHead as (...args: unknown[]) => express.Response;
      res.writeHead = function (this: express.Response, ...args: unknown[]) {
        this.setHeader('X-Response-Time', '1ms');
        return writeHead.apply(this, args);
      } as express.Response['writeHead'];
      next();
    };
    const app = express();
    app.post('/orders', idempotency({ redis }), responseTime, (_req, res) => {
      res.status(201).json({ ok: true });
    });
    const url = `${await servers.listen(app)}/orders`;
    const first = await send(url, { key: freshKey() });
    expect(first.status).toBe(201);
    expect(first.headers.get('x-response-time')).toBe('1ms');
  });

  it('sends what it stored when code after the answer tries to answer again (a throw, a second send)', async () => {
    const redis = redisServer.client();
    const app = orderApp(idempotency({ redis }), (req, res) => {
      res.status(201).json({ first: true });
      if (req.query.then === 'throw') throw new Error('after the answer');
      res.status(200).set('X-Late', 'yes').json({ second: true });
    });
    const url = `${await servers.listen(app)}/orders`;
    for (const then of ['throw', 'send']) {
      const key = freshKey(then);
      const first = await send(`${url}?then=${then}`, { key });
      const replay = await send(`${url}?then=${then}`, { key });
      for (const answer of [first, replay]) {
        expect(answer.status).toBe(201);
        expect(answer.json()).toEqual({ first: true });
        expect(answer.headers.get('x-late')).toBeNull();
      }
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
    }
  });

  it('answers 422 problem+json when the key is reused with a different payload', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = orderApp(idempotency({ redis }), (_req, res) => {
      runs += 1;
      res.status(201).json({ ok: true });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    await send(url, { key, body: { amount: 10 } });
    const changed = await send(url, { key, body: { amount: 11 } });
    expect(changed.status).toBe(422);
    expect(changed.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(changed.json()).toMatchObject({
      status: 422,
      type: expect.stringContaining('idempotency-key-reused'),
    });
    expect(runs).toBe(1);
    expect(events.types()).toContain('mismatch');
  });

  it('answers 422 for a different body no parser read (another Content-Type or size), instead of replaying', async () => {
    const { url, counter } = await countingRoute();
    const key = freshKey();
    const text = { 'Content-Type': 'text/plain' };
    expect((await send(url, { key, body: 'amount=10', headers: text })).status).toBe(200);
    expect((await send(url, { key, body: 'amount=1000', headers: text })).status).toBe(422);
    expect(
      (await send(url, { key, body: 'amount=10', headers: { 'Content-Type': 'text/csv' } })).status,
    ).toBe(422);
    const retry = await send(url, { key, body: 'amount=10', headers: text });
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(counter.runs).toBe(1);
  });

  it('treats JSON bodies parsed by express.json() with reordered keys as the same payload', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = orderApp(idempotency({ redis }), (_req, res) => {
      runs += 1;
      res.json({ run: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const first = await send(url, { key, body: '{"a":1,"b":{"y":2,"x":[1,2]}}' });
    const second = await send(url, { key, body: '{"b":{"x":[1,2],"y":2},"a":1}' });
    expect(second.status).toBe(200);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(second.body.equals(first.body)).toBe(true);
    expect(runs).toBe(1);
  });

  it.each([
    ['empty', ''],
    ['too long (256 characters)', 'a'.repeat(256)],
    ['containing a space', 'two words'],
    ['non-ASCII', 'clé'],
  ])('answers 400 problem+json for a malformed key: %s', async (_label, key) => {
    const redis = redisServer.client();
    let runs = 0;
    const app = orderApp(idempotency({ redis }), (_req, res) => {
      runs += 1;
      res.json({});
    });
    const base = await servers.listen(app);
    const answer = await send(`${base}/orders`, { headers: { 'Idempotency-Key': key } });
    expect(answer.status).toBe(400);
    expect(answer.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(answer.json()).toMatchObject({
      status: 400,
      type: expect.stringContaining('idempotency-key-invalid'),
    });
    expect(runs).toBe(0);
  });

  it('accepts a 255-character key and the quoted structured-field form of the IETF draft', async () => {
    const { url, counter } = await countingRoute();
    expect((await send(url, { key: 'k'.repeat(255) })).status).toBe(200);
    const bare = freshKey();
    await send(url, { key: bare });
    const quoted = await send(url, { key: `"${bare}"` });
    expect(quoted.headers.get('idempotent-replayed')).toBe('true');
    expect(counter.runs).toBe(2);
  });

  it('answers 400 when the key is missing and required, and passes through when it is optional', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const handler: express.RequestHandler = (_req, res) => {
      runs += 1;
      res.json({});
    };
    const strict = `${await servers.listen(orderApp(idempotency({ redis, required: true }), handler))}/orders`;
    const lax = `${await servers.listen(orderApp(idempotency({ redis }), handler))}/orders`;
    const missing = await send(strict);
    expect(missing.status).toBe(400);
    expect(missing.json()).toMatchObject({ type: expect.stringContaining('idempotency-key-missing') });
    expect(runs).toBe(0);
    expect((await send(lax)).status).toBe(200);
    expect((await send(lax)).status).toBe(200);
    expect(runs).toBe(2);
  });

  it('leaves methods it does not protect alone', async () => {
    const { url, counter } = await countingRoute();
    const key = freshKey();
    await send(url, { key, method: 'GET' });
    const again = await send(url, { key, method: 'GET' });
    expect(counter.runs).toBe(2);
    expect(again.headers.get('idempotent-replayed')).toBeNull();
  });

  it('releases the key after a 5xx answer so the retry runs the handler', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = orderApp(idempotency({ redis }), (_req, res) => {
      runs += 1;
      if (runs === 1) res.status(503).json({ error: 'upstream down' });
      else res.status(201).json({ run: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    expect((await send(url, { key })).status).toBe(503);
    const retry = await send(url, { key });
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    const replay = await send(url, { key });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(2);
    expect(events.events).toEqual(
      expect.arrayContaining([expect.objectContaining({ type: 'released', status: 503, reason: 'status' })]),
    );
  });

  it('releases the key when the handler throws (error handler answers 500)', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = orderApp(idempotency({ redis }), async (_req, res) => {
      runs += 1;
      if (runs === 1) throw new Error('boom');
      res.status(201).json({ run: runs });
    });
    app.use(((_err, _req, res, _next) => {
      res.status(500).json({ error: 'internal' });
    }) as express.ErrorRequestHandler);
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    expect((await send(url, { key })).status).toBe(500);
    expect((await send(url, { key })).status).toBe(201);
    expect(runs).toBe(2);
  });

  it('stores 4xx answers by default, and only the listed statuses with storeStatuses', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const handler: express.RequestHandler = (_req, res) => {
      runs += 1;
      res.status(409).json({ error: 'out of stock' });
    };
    const byDefault = `${await servers.listen(orderApp(idempotency({ redis }), handler))}/orders`;
    const onlyCreated = `${await servers.listen(orderApp(idempotency({ redis, storeStatuses: [201] }), handler))}/orders`;
    const key = freshKey();
    await send(byDefault, { key });
    expect((await send(byDefault, { key })).headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
    const other = freshKey();
    await send(onlyCreated, { key: other });
    expect((await send(onlyCreated, { key: other })).headers.get('idempotent-replayed')).toBeNull();
    expect(runs).toBe(3);
  });

  it.each([429, 408, 425])(
    'does not store a %i "try again later" answer by default, so the retry it asks for runs the handler',
    async (status) => {
      const redis = redisServer.client();
      let runs = 0;
      const app = orderApp(idempotency({ redis }), (_req, res) => {
        runs += 1;
        if (runs === 1) res.status(status).set('Retry-After', '1').json({ error: 'later' });
        else res.status(201).json({ run: runs });
      });
      const url = `${await servers.listen(app)}/orders`;
      const key = freshKey();
      expect((await send(url, { key })).status).toBe(status);
      const retry = await send(url, { key });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBeNull();
      expect((await send(url, { key })).headers.get('idempotent-replayed')).toBe('true');
      expect(runs).toBe(2);
      expect(events.events).toEqual(
        expect.arrayContaining([expect.objectContaining({ type: 'released', status, reason: 'status' })]),
      );
    },
  );

  it('storeStatuses can build on the exported defaultStoreStatus', async () => {
    const redis = redisServer.client();
    const runs = new Map<number, number>();
    const app = orderApp(
      idempotency({ redis, storeStatuses: (s) => defaultStoreStatus(s) && s !== 404 }),
      (req, res) => {
        const status = Number(req.query.status);
        runs.set(status, (runs.get(status) ?? 0) + 1);
        res.status(status).json({ status });
      },
    );
    const base = `${await servers.listen(app)}/orders`;
    for (const status of [404, 409, 429]) {
      const key = freshKey();
      await send(`${base}?status=${status}`, { key });
      await send(`${base}?status=${status}`, { key });
    }
    expect(Object.fromEntries(runs)).toEqual({ 404: 2, 409: 1, 429: 2 });
  });

  it('does not store a body larger than maxBodySize and releases the key', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = orderApp(idempotency({ redis, maxBodySize: 1000 }), (_req, res) => {
      runs += 1;
      res.type('text/plain').send('x'.repeat(5000));
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const first = await send(url, { key });
    expect(first.body.length).toBe(5000);
    const second = await send(url, { key });
    expect(second.headers.get('idempotent-replayed')).toBeNull();
    expect(runs).toBe(2);
    expect(events.events).toEqual(
      expect.arrayContaining([expect.objectContaining({ type: 'released', reason: 'too-large' })]),
    );
  });

  it('keeps scopes apart: the same key from two users runs twice and never replays across users', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = orderApp(idempotency({ redis, scope: (req) => req.get('x-user') }), (req, res) => {
      runs += 1;
      res.status(201).json({ user: req.get('x-user'), run: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const alice = await send(url, { key, headers: { 'x-user': 'alice' } });
    const bob = await send(url, { key, headers: { 'x-user': 'bob' } });
    const aliceAgain = await send(url, { key, headers: { 'x-user': 'alice' } });
    expect(runs).toBe(2);
    expect(bob.json()).toMatchObject({ user: 'bob' });
    expect(bob.headers.get('idempotent-replayed')).toBeNull();
    expect(aliceAgain.body.equals(alice.body)).toBe(true);
    expect(aliceAgain.headers.get('idempotent-replayed')).toBe('true');
  });

  it('decodes a replay that compression() after it stored compressed, for a retry that does not accept the coding', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = express();
    app.post('/orders', idempotency({ redis }), compression({ threshold: 0 }), (_req, res) => {
      runs += 1;
      res.status(201).json({ id: 42, note: 'x'.repeat(200) });
    });
    const base = await servers.listen(app);
    const key = freshKey();
    const raw = (acceptEncoding: string) =>
      new Promise<{ encoding?: string; body: Buffer }>((resolve, reject) => {
        const req = httpRequest(`${base}/orders`, {
          method: 'POST',
          headers: { 'Idempotency-Key': key, 'Accept-Encoding': acceptEncoding },
        });
        req.on('response', (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ encoding: res.headers['content-encoding'], body: Buffer.concat(chunks) }),
          );
        });
        req.on('error', reject);
        req.end();
      });
    const first = await raw('gzip');
    expect(first.encoding).toBe('gzip');
    const plainRetry = await raw('identity');
    expect(plainRetry.encoding).toBeUndefined();
    expect(JSON.parse(plainRetry.body.toString())).toMatchObject({ id: 42 });
    const gzipRetry = await raw('gzip');
    expect(gzipRetry.encoding).toBe('gzip');
    expect(JSON.parse(gunzipSync(gzipRetry.body).toString())).toMatchObject({ id: 42 });
    expect(runs).toBe(1);
  });

  it('mounted with app.use, keeps the spellings of one path in one record: another spelling is a 422, never a second run', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const app = express();
    app.use(express.json());
    app.use(idempotency({ redis }));
    app.post('/orders', (_req, res) => {
      runs += 1;
      res.status(201).json({ run: runs });
    });
    const base = await servers.listen(app);
    const key = freshKey();
    const answers = [];
    for (const path of ['/orders', '/Orders', '/orders/'])
      answers.push(await send(`${base}${path}`, { key }));
    expect(runs).toBe(1);
    expect(answers.map((a) => a.status)).toEqual([201, 422, 422]);
    // The same spelling again is the retry it should be.
    const retry = await send(`${base}/orders`, { key });
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });

  it('on a route of a mounted Router, keeps the spellings of the mount path in one record: a 422, never a second run', async () => {
    const redis = redisServer.client();
    let runs = 0;
    const router = express.Router();
    router.post('/orders', idempotency({ redis }), (_req, res) => {
      runs += 1;
      res.status(201).json({ run: runs });
    });
    const app = express();
    app.use(express.json());
    app.use('/api', router);
    const base = await servers.listen(app);
    const key = freshKey();
    expect((await send(`${base}/api/orders`, { key, body: { item: 'book' } })).status).toBe(201);
    expect((await send(`${base}/API/orders`, { key, body: { item: 'book' } })).status).toBe(422);
    expect(runs).toBe(1);
    const retry = await send(`${base}/api/orders`, { key, body: { item: 'book' } });
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });

  it('under a Router with caseSensitive and strict, never answers one handler with what another stored', async () => {
    const redis = redisServer.client();
    const app = express();
    app.use(express.json());
    const router = express.Router({ caseSensitive: true, strict: true });
    router.use(idempotency({ redis }));
    router.post('/Transfer', (_req, res) => {
      res.status(201).json({ handler: 'Transfer' });
    });
    router.post('/transfer', (_req, res) => {
      res.status(201).json({ handler: 'transfer' });
    });
    router.post('/pay/', (_req, res) => {
      res.status(201).json({ handler: 'pay/' });
    });
    router.post('/pay', (_req, res) => {
      res.status(201).json({ handler: 'pay' });
    });
    app.use('/cs', router);
    const base = await servers.listen(app);
    const key = freshKey();
    expect(JSON.parse((await send(`${base}/cs/Transfer`, { key })).body.toString())).toEqual({
      handler: 'Transfer',
    });
    expect((await send(`${base}/cs/transfer`, { key })).status).toBe(422);
    const other = freshKey();
    expect((await send(`${base}/cs/pay/`, { key: other })).status).toBe(201);
    expect((await send(`${base}/cs/pay`, { key: other })).status).toBe(422);
  });

  it('keeps routes apart: the same key on another route is a different record', async () => {
    const redis = redisServer.client();
    const middleware = idempotency({ redis });
    let runs = 0;
    const app = express();
    const handler: express.RequestHandler = (req, res) => {
      runs += 1;
      res.json({ path: req.path });
    };
    app.post('/a', middleware, handler);
    app.post('/b', middleware, handler);
    const base = await servers.listen(app);
    const key = freshKey();
    await send(`${base}/a`, { key });
    const b = await send(`${base}/b`, { key });
    expect(b.status).toBe(200);
    expect(runs).toBe(2);
  });

  it('every record it writes has a TTL', async () => {
    const redis = redisServer.client();
    const app = orderApp(idempotency({ redis, ttl: '1h', prefix: 'ttlcheck:' }), (_req, res) => {
      res.json({});
    });
    const url = `${await servers.listen(app)}/orders`;
    await send(url, { key: freshKey() });
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', 'ttlcheck:*');
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    expect(keys.length).toBe(1);
    const ttl = await redis.pttl(keys[0]!);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(3_600_000);
  });

  it('forget() deletes a record so the key can be used afresh', async () => {
    const redis = redisServer.client();
    const middleware = idempotency({ redis, scope: (req) => req.get('x-user') });
    let runs = 0;
    const app = orderApp(middleware, (_req, res) => {
      runs += 1;
      res.json({ run: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    await send(url, { key, headers: { 'x-user': 'carol' } });
    expect(await middleware.forget({ key, route: '/orders', scope: 'carol' })).toBe(true);
    const again = await send(url, { key, headers: { 'x-user': 'carol' } });
    expect(again.headers.get('idempotent-replayed')).toBeNull();
    expect(runs).toBe(2);
  });

  it('forget() of a request in flight frees the key at once, and the old handler’s answer is not stored over the new one', async () => {
    const redis = redisServer.client();
    const middleware = idempotency({ redis, lockTtl: 300 });
    let runs = 0;
    const app = orderApp(middleware, async (_req, res) => {
      runs += 1;
      const run = runs;
      if (run === 1) await sleep(600);
      res.status(201).json({ run });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const first = send(url, { key });
    await eventually(() => runs === 1, 'the first run');
    expect(await middleware.forget({ key, route: '/orders', ip: '127.0.0.1' })).toBe(true);
    await sleep(250); // the first handler's lease renewals (every 100 ms) go on meanwhile
    const second = await send(url, { key });
    expect(JSON.parse(second.body.toString())).toEqual({ run: 2 });
    expect(JSON.parse((await first).body.toString())).toEqual({ run: 1 });
    const replay = await send(url, { key });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(JSON.parse(replay.body.toString())).toEqual({ run: 2 });
    expect(events.types()).toContain('lease-lost');
  });

  it('forget() of a running request, then a retry that fails (5xx): the forgotten handler still does not store its answer', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let runs = 0;
    const middleware = idempotency({ redis: redisServer.client(), scope: () => 'u1' });
    const url = `${await servers.listen(
      orderApp(middleware, async (req, res) => {
        runs += 1;
        if (runs === 1) {
          await gate; // the old, forgotten run is still at work
          return void res.status(201).json({ run: 1, amount: req.body.amount });
        }
        if (runs === 2) return void res.status(500).json({ run: 2 }); // the retry fails: key released
        res.status(201).json({ run: runs, amount: req.body.amount });
      }),
    )}/orders`;
    const key = freshKey('forget');
    const old = send(url, { key, body: { amount: 10 } });
    await eventually(() => runs === 1, 'the first run');
    expect(await middleware.forget({ key, route: '/orders', scope: 'u1' })).toBe(true);
    // The client sends the corrected payload with the same key, now free.
    expect((await send(url, { key, body: { amount: 20 } })).status).toBe(500);
    release(); // the forgotten run ends
    expect((await old).status).toBe(201);
    await new Promise((r) => setTimeout(r, 100));
    // Retry of the corrected request: runs afresh (the key was forgotten, its retry failed).
    const retry = await send(url, { key, body: { amount: 20 } });
    expect([retry.status, retry.headers.get('idempotent-replayed')]).toEqual([201, null]);
    expect(retry.json()).toEqual({ run: 3, amount: 20 });
  }, 20_000);

  it('a handler whose record vanished mid-request (Redis restarted empty) takes it back, so the retry replays', async () => {
    const redis = redisServer.client();
    const middleware = idempotency({ redis, lockTtl: 300 });
    let runs = 0;
    const app = orderApp(middleware, async (_req, res) => {
      runs += 1;
      await sleep(500);
      res.status(201).json({ order: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const first = send(url, { key });
    await eventually(() => runs === 1, 'the first run');
    await redisServer.plain().flushall(); // what a restart without persistence leaves
    expect((await first).status).toBe(201);
    const retry = await send(url, { key });
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(JSON.parse(retry.body.toString())).toEqual({ order: 1 });
    expect(runs).toBe(1);
    expect(events.types()).toContain('lease-restored');
  });

  it('forget() finds a record of a middleware mounted with use() by the path as requested, and one on a route by its pattern', async () => {
    const redis = redisServer.client();
    const onUse = idempotency({ redis, prefix: 'use:' });
    const onRoute = idempotency({ redis, prefix: 'route:' });
    const app = express();
    const router = express.Router();
    router.use(onUse);
    router.post('/Items/', (_req, res) => {
      res.status(201).json({ ok: true });
    });
    app.use('/V1', router);
    app.post('/api/Orders/:id', onRoute, (_req, res) => {
      res.status(201).json({ ok: true });
    });
    const url = await servers.listen(app);
    const key = freshKey();
    await send(`${url}/V1/Items/`, { key });
    await send(`${url}/api/Orders/5`, { key });
    expect(await onUse.forget({ key, route: '/V1/Items/', ip: '127.0.0.1' })).toBe(true);
    expect(await onRoute.forget({ key, route: '/api/Orders/:id', ip: '127.0.0.1' })).toBe(true);
    expect(await onRoute.forget({ key, route: '/api/Orders/:id', ip: '127.0.0.1' })).toBe(false);
  });

  it("replays to one client whatever the spelling of its address: IPv4-mapped (a dual-stack instance), a proxy's added port, IPv6 written two ways", async () => {
    let runs = 0;
    const app = orderApp(idempotency({ redis: redisServer.client() }), (_req, res) => {
      runs += 1;
      res.status(201).json({ run: runs });
    });
    // The proxy header stands in for how each instance (or each connection) reports the client.
    app.set('trust proxy', true);
    const url = `${await servers.listen(app)}/orders`;
    for (const [seen, retried] of [
      ['::ffff:198.51.100.7', '198.51.100.7'],
      ['198.51.100.8:50001', '198.51.100.8:50002'],
      ['2001:db8:0:0:0:0:0:1', '[2001:db8::1]:443'],
    ] as const) {
      const key = freshKey();
      const first = await send(url, { key, headers: { 'x-forwarded-for': seen } });
      const retry = await send(url, { key, headers: { 'x-forwarded-for': retried } });
      expect([seen, first.status, retry.headers.get('idempotent-replayed')]).toEqual([seen, 201, 'true']);
    }
    expect(runs).toBe(3);
    // Another client's address is still another key space.
    const key = freshKey();
    await send(url, { key, headers: { 'x-forwarded-for': '198.51.100.10' } });
    const other = await send(url, { key, headers: { 'x-forwarded-for': '198.51.100.11' } });
    expect(other.headers.get('idempotent-replayed')).toBeNull();
    expect(runs).toBe(5);
  });

  it('forget({ ip }) finds a record whether the IPv4 client was seen plain or IPv4-mapped (dual-stack)', async () => {
    const middleware = idempotency({ redis: redisServer.client() });
    let runs = 0;
    const app = orderApp(middleware, (_req, res) => {
      runs += 1;
      res.json({ run: runs });
    });
    // The proxy header stands in for the two ways Node reports one IPv4 client's address.
    app.set('trust proxy', true);
    const url = `${await servers.listen(app)}/orders`;
    for (const [seen, given] of [
      ['::ffff:198.51.100.7', '198.51.100.7'],
      ['198.51.100.8', '::FFFF:198.51.100.8'],
      ['::ffff:198.51.100.9', '::FFFF:198.51.100.9'],
    ] as const) {
      const key = freshKey();
      const headers = { 'x-forwarded-for': seen };
      await send(url, { key, headers });
      expect(await middleware.forget({ key, route: '/orders', ip: given })).toBe(true);
      const again = await send(url, { key, headers });
      expect(again.headers.get('idempotent-replayed')).toBeNull();
    }
    expect(runs).toBe(6);
  });
});
