import { connect, type Socket } from 'node:net';
import express, { type RequestHandler } from 'express';
import { closeRedis, createRedis } from '../../lib/connection';
import { idempotency } from '../../lib/idempotency';
import { type RateLimitMiddleware, rateLimit } from '../../lib/rate-limit';
import { redisSession } from '../../lib/session';
import { listen, sleep } from '../cache/helpers';
import { captureEvents } from '../helpers/events';
import { eventually, useRedisServer } from '../helpers/redis';
import { proxyPort, startTcpProxy, useSlowKitClients } from '../helpers/tcp-proxy';

// skipFailedRequests / skipSuccessfulRequests judge an answer the app ended, delivered or not. A kit
// middleware may hold that answer's end while its Redis call is on the way (idempotency storing or
// releasing the record, redisSession saving), and the client may hang up meanwhile; or the answer may
// be queued behind another on a pipelined connection that dies. Either way it is judged, and a held
// answer as it goes out once released: the app's (status changes made during the hold undone), or
// what a layer put in its place (the session's 503), whether or not the client stayed.
const redis = useRedisServer();
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** Sends `head` and hangs up as soon as `hangUp` is called (the handler calls it after answering). */
function rawClient(port: number, head: string): { socket: Socket; hangUp: () => void } {
  const socket = connect(port, '127.0.0.1', () => socket.write(head));
  socket.on('error', () => {});
  return { socket, hangUp: () => socket.destroy() };
}

const slowClient = useSlowKitClients(() => redis.server.port);

/** A limiter of 5 a minute for one client ('k') that gives back `option`'s requests. */
function refundingLimiter(name: string, option: 'skipFailedRequests' | 'skipSuccessfulRequests') {
  return rateLimit({
    redis: redis.plain(),
    limit: 5,
    window: '1m',
    name,
    key: () => 'k',
    timeout: 5000,
    [option]: true,
  });
}

/** What the client has used, and how many refunds were made. */
async function standing(limiter: RateLimitMiddleware, events: { count(type: string): number }) {
  return { used: (await limiter.get('k')).used, refunds: events.count('refund') };
}

it.each<
  [string, 'skipFailedRequests' | 'skipSuccessfulRequests', number, 'none' | 'idempotency' | 'session']
>([
  ['control: nothing holds the answer', 'skipFailedRequests', 422, 'none'],
  ['idempotency holds the 422 while it releases the key', 'skipFailedRequests', 422, 'idempotency'],
  ['redisSession holds the 200 while it saves the session', 'skipSuccessfulRequests', 200, 'session'],
])(
  '%s; the client hangs up 10 ms after the handler answered: the cost is given back',
  async (name, option, status, holder) => {
    const events = captureEvents('rate-limit');
    cleanups.push(events.stop);
    const limiter = refundingLimiter(`held-${holder}`, option);
    let hangUp = () => {};
    let answered = 0;
    const handler: RequestHandler = (req, res) => {
      if (holder === 'session') (req.session as unknown as { views: number }).views = 1;
      res.status(status).json({ ok: status < 400 });
      answered += 1;
      setTimeout(hangUp, 10); // the held end waits on a Redis reply delayed 100 ms
    };
    const app = express();
    const slow = holder === 'none' ? undefined : await slowClient(100);
    if (holder === 'session') app.use(redisSession({ redis: slow!, secret: 'x'.repeat(32), timeout: 2000 }));
    const chain: RequestHandler[] = [limiter];
    if (holder === 'idempotency') chain.push(idempotency({ redis: slow!, timeout: 2000 }));
    app.post('/x', ...chain, handler);
    const server = await listen(app);
    cleanups.push(server.close);
    const port = Number(new URL(server.url).port);
    const c = rawClient(
      port,
      `POST /x HTTP/1.1\r\nHost: x\r\nIdempotency-Key: key-${name.length}-${Date.now()}\r\nContent-Length: 0\r\n\r\n`,
    );
    hangUp = c.hangUp;
    await eventually(() => answered === 1, 'the handler to answer');
    await sleep(600); // the held end went out long ago; a refund would have been sent
    expect(await standing(limiter, events)).toEqual({ used: 0, refunds: 1 });
  },
  20_000,
);

it('a pipelined request answered 422, whose connection died while the answer was queued, is given back (skipFailedRequests)', async () => {
  const events = captureEvents('rate-limit');
  const limiter = refundingLimiter('pipelined', 'skipFailedRequests');
  let answered = 0;
  const app = express();
  app.get('/slow', (_req, res) => {
    setTimeout(() => res.end('slow'), 500);
  });
  app.post('/x', limiter, (_req, res) => {
    res.status(422).json({ error: 'invalid' });
    answered += 1;
  });
  const server = await listen(app);
  try {
    const socket = connect(Number(new URL(server.url).port), '127.0.0.1', () => {
      socket.write(
        'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nPOST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n',
      );
    });
    socket.on('error', () => {});
    await eventually(() => answered === 1, 'the 422');
    socket.destroy(); // the 422 is still queued behind /slow
    await sleep(800);
    expect(await standing(limiter, events)).toEqual({ used: 0, refunds: 1 });
  } finally {
    events.stop();
    await server.close();
  }
}, 20_000);

it.each([
  ['stays', false],
  ['hangs up during the hold', true],
])(
  'skipFailedRequests, a 201 idempotency holds, then a throw (Express sets 500 meanwhile), the client %s: judged on the 201 (cost kept)',
  async (_what, hangUpDuringHold) => {
    const events = captureEvents('rate-limit');
    cleanups.push(events.stop);
    const name = `thrown-${hangUpDuringHold}`;
    const limiter = refundingLimiter(name, 'skipFailedRequests');
    const slow = await slowClient(150);
    let socket: Socket | undefined;
    let answered = 0;
    const handler: RequestHandler = (_req, res) => {
      res.status(201).json({ ok: true });
      answered += 1;
      if (hangUpDuringHold) setTimeout(() => socket?.destroy(), 40);
      throw new Error('after answering');
    };
    const app = express();
    app.post('/x', limiter, idempotency({ redis: slow, timeout: 2000 }), handler);
    const server = await listen(app);
    cleanups.push(server.close);
    let reply = '';
    socket = connect(Number(new URL(server.url).port), '127.0.0.1', () =>
      socket!.write(
        `POST /x HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-${Date.now()}-${name}\r\nContent-Length: 0\r\n\r\n`,
      ),
    );
    socket.on('data', (d) => (reply += d));
    socket.on('error', () => {});
    await eventually(() => answered === 1, 'the handler');
    await sleep(700);
    if (!hangUpDuringHold) expect(reply).toMatch(/^HTTP\/1.1 201/);
    socket.destroy();
    await sleep(100);
    expect(await standing(limiter, events)).toEqual({ used: 1, refunds: 0 });
  },
);

it.each([
  ['stays', false],
  ['hangs up during the save', true],
])(
  'skipSuccessfulRequests, a 200 whose session save fails (503 in its place), the client %s: judged on the 503 (cost kept)',
  async (_w, hangUp) => {
    const events = captureEvents('rate-limit');
    cleanups.push(events.stop);
    // Session writes stall 1 s; the session's timeout is 200 ms: its save fails.
    let stall = false;
    const proxy = await startTcpProxy(redis.server.port, {
      before: () => (stall ? sleep(1000).then(() => {}) : undefined),
    });
    const sclient = createRedis({ url: `redis://127.0.0.1:${proxyPort(proxy)}`, logger: false });
    cleanups.push(async () => {
      await closeRedis(sclient, { timeoutMs: 100 });
      proxy.close();
    });
    await sclient.ping();
    sclient.on('error', () => {});
    const name = `s503-${hangUp}`;
    const limiter = refundingLimiter(name, 'skipSuccessfulRequests');
    let socket: Socket | undefined;
    let answered = 0;
    const app = express();
    app.use(redisSession({ redis: sclient, secret: 'x'.repeat(32), timeout: 200 }));
    app.post('/login', limiter, (req, res) => {
      (req.session as unknown as { user: string }).user = 'u';
      stall = true;
      res.status(200).json({ ok: true });
      answered += 1;
      if (hangUp) setTimeout(() => socket?.destroy(), 30);
    });
    const server = await listen(app);
    cleanups.push(server.close);
    let reply = '';
    socket = connect(Number(new URL(server.url).port), '127.0.0.1', () =>
      socket!.write('POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n'),
    );
    socket.on('data', (d) => (reply += d));
    socket.on('error', () => {});
    await eventually(() => answered === 1, 'the handler');
    await sleep(800);
    if (!hangUp) expect(reply).toMatch(/^HTTP\/1.1 503/);
    socket.destroy();
    await sleep(100);
    // Not given back: the answer was the 503 (a failure), as when the client stays.
    expect(await standing(limiter, events)).toEqual({ used: 1, refunds: 0 });
  },
);
