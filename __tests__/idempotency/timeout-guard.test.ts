import compression from 'compression';
import timeout from 'connect-timeout';
import express, { type RequestHandler } from 'express';
import onFinished from 'on-finished';
import { idempotency } from '../../lib/idempotency';
import { eventually, useRedisServer } from '../helpers/redis';
import { freshKey, send, useEvents, useServers } from './http';

const redisServer = useRedisServer();
const servers = useServers();
const events = useEvents();

/** A promise the test settles: the first run of a handler waits on it, as a slow handler would. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

/**
 * POST /orders behind connect-timeout (its 503 answered by Express's final handler) and
 * `idempotency()`. The first run of `handler` waits for the gate, long past the guard's limit.
 */
async function guardedRoute(
  handler: (req: express.Request, res: express.Response, run: number) => void,
  options: {
    lockTtl?: string;
    /** Mounted in front of everything. */
    before?: RequestHandler;
    /** Mounted on the route after `idempotency()`. */
    after?: RequestHandler;
    /** What the first run does before it waits. */
    early?: (res: express.Response) => void;
    /** What the first run waits for, instead of the gate. */
    waitFor?: (req: express.Request) => Promise<void>;
  } = {},
) {
  const slow = gate();
  const counter = { runs: 0 };
  const app = express();
  if (options.before) app.use(options.before);
  app.use(timeout('250ms'));
  app.use(express.json());
  const route: RequestHandler[] = [
    idempotency({ redis: redisServer.client(), ...(options.lockTtl ? { lockTtl: options.lockTtl } : {}) }),
  ];
  if (options.after) route.push(options.after);
  app.post('/orders', ...route, async (req, res) => {
    counter.runs += 1;
    const run = counter.runs;
    if (run === 1) {
      options.early?.(res);
      await (options.waitFor ? options.waitFor(req) : slow.opened);
    }
    handler(req, res, run);
  });
  return { url: `${await servers.listen(app)}/orders`, counter, open: slow.open };
}

/**
 * The first request gets the guard's 503, then the handler's first run goes on; → a retry's answer
 * once the kit reported `event` for that run's own answer.
 */
async function retryAfterLateAnswer(route: Awaited<ReturnType<typeof guardedRoute>>, event: string) {
  const key = freshKey();
  expect((await send(route.url, { key, body: {} })).status).toBe(503);
  route.open();
  await eventually(() => events.types().includes(event), `a "${event}" event`);
  return send(route.url, { key, body: {} });
}

describe('idempotency behind a timeout guard (connect-timeout)', () => {
  it("keeps the key in flight after the guard's 503 and replays the handler's own late answer", async () => {
    const { url, counter, open } = await guardedRoute((_req, res, run) => {
      res.status(201).set('Location', '/orders/7').json({ id: 7, run });
    });
    const key = freshKey();

    const first = await send(url, { key, body: { item: 'book' } });
    expect(first.status).toBe(503);
    const duringRun = await send(url, { key, body: { item: 'book' } });
    expect(duringRun.status).toBe(409);
    expect(duringRun.headers.get('retry-after')).not.toBeNull();

    open();
    await eventually(() => events.types().includes('stored'), 'the late answer stored');
    const retry = await send(url, { key, body: { item: 'book' } });

    expect(counter.runs).toBe(1);
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(retry.json()).toEqual({ id: 7, run: 1 });
    expect(retry.headers.get('location')).toBe('/orders/7');
    expect(retry.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(events.types()).toEqual(
      expect.arrayContaining(['first', 'awaiting-handler', 'conflict', 'stored']),
    );
    expect(events.types()).not.toContain('released');
  });

  it('stores a late file sent as a buffer, as the README advises instead of res.sendFile()', async () => {
    const file = Buffer.from('id,total\n7,42\n');
    const route = await guardedRoute((_req, res) => {
      res.status(201).type('csv').send(file);
    });
    const retry = await retryAfterLateAnswer(route, 'stored');
    expect([retry.status, retry.headers.get('idempotent-replayed'), retry.body.toString()]).toEqual([
      201,
      'true',
      'id,total\n7,42\n',
    ]);
    expect(retry.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(route.counter.runs).toBe(1);
  });

  it('stores a late answer the handler streams in chunks, with its own status line', async () => {
    const route = await guardedRoute((_req, res) => {
      res.writeHead(202, 'Queued', { 'Content-Type': 'text/plain' });
      res.write('part one, ');
      res.end('part two');
    });
    const retry = await retryAfterLateAnswer(route, 'stored');

    expect(route.counter.runs).toBe(1);
    expect(retry.status).toBe(202);
    expect(retry.statusText).toBe('Queued');
    expect(retry.body.toString()).toBe('part one, part two');
    expect(retry.headers.get('content-type')).toBe('text/plain');
  });

  it("stores every value of a name repeated in a late answer's writeHead list", async () => {
    const route = await guardedRoute((_req, res) => {
      res.writeHead(202, ['Link', '</a>; rel=next', 'Link', '</b>; rel=prev', 'Content-Type', 'text/plain']);
      res.end('queued');
    });
    const retry = await retryAfterLateAnswer(route, 'stored');

    expect(retry.status).toBe(202);
    expect(retry.headers.get('link')).toBe('</a>; rel=next, </b>; rel=prev');
  });

  it('releases the key when the late answer is one that is not stored (a 5xx)', async () => {
    const route = await guardedRoute((_req, res, run) => {
      if (run === 1) res.status(500).json({ error: 'database down' });
      else res.status(201).json({ run });
    });
    const retry = await retryAfterLateAnswer(route, 'released');

    expect(route.counter.runs).toBe(2);
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
  });

  it('lets the lease lapse, lockTtl after the guard, for a handler that stopped when the guard fired', async () => {
    const { url, counter, open } = await guardedRoute(
      (req, res, run) => {
        // connect-timeout's advice: stop when the guard fired, without answering.
        if (!(req as { timedout?: boolean }).timedout) res.status(201).json({ run });
      },
      { lockTtl: '300ms' },
    );
    const key = freshKey();
    expect((await send(url, { key, body: {} })).status).toBe(503);
    open();
    expect((await send(url, { key, body: {} })).status).toBe(409);

    let retry = await send(url, { key, body: {} });
    const lapsedBy = Date.now() + 5000;
    while (retry.status === 409 && Date.now() < lapsedBy) {
      await new Promise((r) => setTimeout(r, 50));
      retry = await send(url, { key, body: {} });
    }

    expect(retry.status).toBe(201);
    expect(retry.json()).toEqual({ run: 2 });
    expect(counter.runs).toBe(2);
  });

  it('does not run the handler, and frees the key, when the guard answered while Redis was asked', async () => {
    let runs = 0;
    const app = express();
    app.use(timeout('100ms'));
    app.use(express.json());
    const redis = redisServer.client({ commandTimeout: 5000 });
    app.post('/orders', idempotency({ redis, timeout: '5s' }), (_req, res) => {
      runs += 1;
      res.status(201).json({ run: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    // Redis answers the reservation only after the guard fired.
    const pauser = redisServer.plain();
    await pauser.call('CLIENT', 'PAUSE', '600', 'ALL');

    expect((await send(url, { key, body: {} })).status).toBe(503);

    await eventually(() => events.types().includes('released'), 'the reservation released', 10_000);
    const retry = await send(url, { key, body: {} });

    expect(runs).toBe(1);
    expect(retry.status).toBe(201);
    expect(retry.json()).toEqual({ run: 1 });
    expect(events.events.find((e) => e.type === 'released')).toMatchObject({ reason: 'answered-before' });
  });

  it("with failMode 'open', does not run the handler when the guard answered and then the reservation timed out", async () => {
    let runs = 0;
    const app = express();
    app.use(timeout('100ms'));
    app.use(express.json());
    const redis = redisServer.client({ commandTimeout: 5000 });
    app.post('/orders', idempotency({ redis, timeout: 400, failMode: 'open' }), (_req, res) => {
      runs += 1;
      res.status(201).json({ run: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    await redis.ping();
    const pauser = redisServer.plain();
    await pauser.call('CLIENT', 'PAUSE', '700', 'ALL');

    // The guard answers at 100 ms, the reservation times out at 400 ms.
    expect((await send(url, { key, body: {} })).status).toBe(503);
    await eventually(() => events.types().includes('unavailable'), 'the reservation to time out');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(runs).toBe(0);

    // The client, given the guard's 503, retries: the order is made once in all.
    await eventually(async () => (await pauser.ping().catch(() => '')) === 'PONG', 'the pause to end');
    const retry = await send(url, { key, body: {} });
    expect(retry.status).toBe(201);
    expect(runs).toBe(1);
  });

  it('writes no replay, and keeps the connection, when the guard answered while Redis looked up a stored answer', async () => {
    const sockets = new Set<unknown>();
    const app = express();
    app.use((req, _res, next) => {
      sockets.add(req.socket);
      next();
    });
    app.use(timeout('100ms'));
    const redis = redisServer.client({ commandTimeout: 5000 });
    app.post('/orders', idempotency({ redis, timeout: '5s' }), (_req, res) => void res.status(201).json({}));
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    expect((await send(url, { key, body: {} })).status).toBe(201);

    await redisServer.plain().call('CLIENT', 'PAUSE', '400', 'ALL');
    expect((await send(url, { key, body: {} })).status).toBe(503);
    // The lookup answers 'done' after the guard's 503; the next request reuses the connection.
    await new Promise((r) => setTimeout(r, 700));
    expect((await send(url, { key, body: {} })).headers.get('idempotent-replayed')).toBe('true');

    expect(sockets.size).toBe(1);
  });

  it('starts the late answer from the status and headers the handler set before the guard fired', async () => {
    const route = await guardedRoute((_req, res) => void res.json({ id: 9 }), {
      early: (res) => void res.status(201).location('/orders/9'),
    });
    const retry = await retryAfterLateAnswer(route, 'stored');

    expect(retry.status).toBe(201);
    expect(retry.headers.get('location')).toBe('/orders/9');
    expect(retry.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(retry.json()).toEqual({ id: 9 });
  });

  it('refuses a late header value or status Node would refuse, as Node does, so nothing unsendable is stored', async () => {
    const refused: unknown[] = [];
    const refuse = (answer: () => void) => {
      try {
        answer();
      } catch (error) {
        refused.push((error as { code?: string }).code);
      }
    };
    const route = await guardedRoute((_req, res) => {
      refuse(() => res.set('X-Title', 'Price: 10 \u20ac'));
      refuse(() => res.writeHead(99));
      res.statusCode = 1000;
      refuse(() => res.end('x'));
      res.status(201).json({ ok: true });
    });
    const retry = await retryAfterLateAnswer(route, 'stored');

    expect(refused).toEqual([
      'ERR_INVALID_CHAR',
      'ERR_HTTP_INVALID_STATUS_CODE',
      'ERR_HTTP_INVALID_STATUS_CODE',
    ]);
    expect(retry.status).toBe(201);
    expect(retry.headers.get('x-title')).toBeNull();
  });

  it("copies an answer that comes right after the guard's, with compression in front", async () => {
    const route = await guardedRoute((_req, res) => void res.status(201).json({ late: 'at once' }), {
      before: compression({ threshold: 0 }),
      waitFor: (req) => new Promise<void>((resolve) => req.once('timeout', () => setImmediate(resolve))),
    });
    const key = freshKey();
    expect((await send(route.url, { key, body: {} })).status).toBe(503);
    await eventually(() => events.types().includes('stored'), 'the late answer stored');
    const retry = await send(route.url, { key, body: {} });

    expect(route.counter.runs).toBe(1);
    expect(retry.status).toBe(201);
    expect(retry.json()).toEqual({ late: 'at once' });
  });

  it('stores the late answer for both of two idempotency middlewares on the route', async () => {
    const route = await guardedRoute((_req, res, run) => void res.status(201).json({ run }), {
      after: idempotency({ redis: redisServer.client(), header: 'X-Request-Key', prefix: 'inner:' }),
    });
    const inner = freshKey('inner');
    const first = await send(route.url, { key: freshKey(), body: {}, headers: { 'X-Request-Key': inner } });
    expect(first.status).toBe(503);
    route.open();
    await eventually(() => events.types().filter((t) => t === 'stored').length === 2, 'both stored');
    // Another outer key, the same inner one: the inner middleware replays.
    const retry = await send(route.url, { key: freshKey(), body: {}, headers: { 'X-Request-Key': inner } });

    expect(route.counter.runs).toBe(1);
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(retry.json()).toEqual({ run: 1 });
  });

  it("frees the key lockTtl after the guard's answer, not a renewal later", async () => {
    const redis = redisServer.client();
    const app = express();
    app.use(timeout('100ms'));
    app.post('/orders', idempotency({ redis, lockTtl: '900ms', prefix: 'lapse:' }), () => {
      // Stops without answering once the guard fired.
    });
    const url = `${await servers.listen(app)}/orders`;
    expect((await send(url, { key: freshKey(), body: {} })).status).toBe(503);
    const answered = Date.now();
    const [record] = await redis.keys('lapse:*');
    await new Promise((r) => setTimeout(r, 700));
    const asked = Date.now();
    const left = await redis.pttl(String(record));

    // Renewed every 300 ms until then, but never past 900 ms after the guard's answer (with room for
    // a busy Redis to run a renewal late). Renewed for a full lockTtl, as before, it would have some
    // 800 ms left.
    expect(left).toBeLessThanOrEqual(900 - (asked - answered) + 250);
  });

  it("shows loggers, on 'finish' and on 'close', the guard's answer as it was sent", async () => {
    const logged: Array<{ status: number; type: unknown; length: unknown }> = [];
    const logger: RequestHandler = (_req, res, next) => {
      const log = () =>
        logged.push({
          status: res.statusCode,
          type: res.getHeader('content-type'),
          length: res.getHeader('content-length'),
        });
      onFinished(res, log);
      res.on('close', log);
      next();
    };
    const { url, open } = await guardedRoute((_req, res) => void res.status(201).json({ ok: true }), {
      before: logger,
    });
    const first = await send(url, { key: freshKey(), body: {} });
    open();
    await eventually(() => events.types().includes('stored'), 'the late answer stored');

    expect(first.status).toBe(503);
    const sent = { status: 503, type: first.headers.get('content-type'), length: first.body.length };
    expect(logged).toEqual([sent, sent]);
  });
});

describe('forget() of a key whose handler answers late, behind a timeout guard', () => {
  it("does not store the forgotten handler's answer, also once the lease it had has run out", async () => {
    const redis = redisServer.client();
    // Renewed every 1000 ms; after the guard's 503 at ~500 ms the lease lasts until ~3500 ms, renewed
    // last at ~3000 ms (lease.ts): from then its holder sends no heartbeat that could learn of forget().
    const middleware = idempotency({ redis, lockTtl: 3000, scope: () => 'u' });
    let runs = 0;
    let startedAt = 0;
    const slow = gate();
    const app = express();
    app.use(timeout('500ms'));
    app.use(express.json());
    app.post('/orders', middleware, async (_req, res) => {
      runs += 1;
      const run = runs;
      if (run === 1) {
        startedAt = Date.now();
        await slow.opened;
      }
      res.status(201).json({ run });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey('forget-lapse');
    expect((await send(url, { key, body: {} })).status).toBe(503);
    const wait = (until: number) => new Promise((resolve) => setTimeout(resolve, until - Date.now()));
    await wait(startedAt + 3250);
    expect(await middleware.forget({ key, route: '/orders', scope: 'u' })).toBe(true);
    // Past the end of that lease (the forgotten mark goes with it), the handler answers.
    await wait(startedAt + 4300);
    slow.open();
    await eventually(() => events.types().some((t) => t === 'stored' || t === 'lease-lost'), 'its outcome');
    expect(events.types()).not.toContain('stored');
    const retry = await send(url, { key, body: {} });
    expect([retry.status, retry.headers.get('idempotent-replayed'), retry.json()]).toEqual([
      201,
      null,
      { run: 2 },
    ]);
  }, 20_000);
});
