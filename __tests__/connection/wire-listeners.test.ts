import { connect, type Socket } from 'node:net';
import express from 'express';
import { cacheResponse } from '../../lib/cache';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { listen, quietLogger, sleep } from '../cache/helpers';
import { eventually, useRedisServer } from '../helpers/redis';

// Each kit layer watches the connection of a response queued behind another (pipelining): one
// listener per connection for all of them, or a client pipelining a handful of requests pushes the
// socket past its 10 listeners (Node's MaxListenersExceededWarning, as often as a client likes).
const redis = useRedisServer();

it.each([
  ['rateLimit(skipFailedRequests) + idempotency, 6 pipelined POSTs', 'POST', 6],
  ['rateLimit(skipSuccessfulRequests) + cacheResponse, 11 pipelined GETs', 'GET', 11],
  ['rateLimit(skipFailedRequests) alone, 11 pipelined POSTs', 'POST1', 11],
])('%s: the connection stays within its max listeners', async (_name, kind, n) => {
  const client = redis.client();
  const app = express();
  let answered = 0;
  let socketSeen: Socket | undefined;
  let most = 0;
  app.get('/slow', (req, res) => {
    socketSeen = req.socket;
    setTimeout(() => res.end('slow'), 500);
  });
  const limiter = rateLimit({
    redis: client,
    limit: 1000,
    window: '1m',
    name: `pl-${kind}`,
    key: () => 'k',
    skipFailedRequests: true,
    skipSuccessfulRequests: kind === 'GET',
  });
  const done = (_req: express.Request, res: express.Response) => {
    res.status(201).json({ ok: 1 });
    answered += 1;
    most = Math.max(most, socketSeen?.listenerCount('close') ?? 0);
    setImmediate(() => (most = Math.max(most, socketSeen?.listenerCount('close') ?? 0)));
  };
  if (kind === 'POST') app.post('/x/:i', limiter, idempotency({ redis: client }), done);
  else if (kind === 'POST1') app.post('/x/:i', limiter, done);
  else app.get('/x/:i', limiter, cacheResponse({ redis: client, ttl: 60, logger: quietLogger() }), done);
  const server = await listen(app);
  try {
    const socket = connect(Number(new URL(server.url).port), '127.0.0.1', () => {
      let head = 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n';
      const m = kind === 'GET' ? 'GET' : 'POST';
      for (let i = 0; i < n; i++)
        head += `${m} /x/${i} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: pk-${kind}-${i}\r\nContent-Length: 0\r\n\r\n`;
      socket.write(head);
    });
    socket.on('error', () => {});
    socket.resume();
    await eventually(() => answered === n, 'answers');
    await sleep(50);
    socket.destroy();
    // One per connection, plus Node's own: far below its limit of 10, however many wait.
    expect(most).toBeLessThanOrEqual(4);
  } finally {
    await server.close();
  }
});

it('11 pipelined cache misses streaming 64 KiB each behind a slow request: the connection stays within a few listeners, with no warning', async () => {
  const client = redis.client();
  const app = express();
  let answered = 0;
  let socketSeen: Socket | undefined;
  let most = 0;
  app.get('/slow', (req, res) => {
    socketSeen = req.socket;
    setTimeout(() => res.end('slow'), 800);
  });
  app.get('/x/:i', cacheResponse({ redis: client, ttl: 60, logger: quietLogger() }), (_req, res) => {
    res.write(Buffer.alloc(64 * 1024, 'a'));
    res.end();
    answered += 1;
    most = Math.max(most, socketSeen?.listenerCount('close') ?? 0);
  });
  const server = await listen(app);
  const warnings: string[] = [];
  const onWarn = (w: Error) => warnings.push(w.name);
  process.on('warning', onWarn);
  try {
    const socket = connect(Number(new URL(server.url).port), '127.0.0.1', () => {
      let head = 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n';
      for (let i = 0; i < 11; i++) head += `GET /x/${i} HTTP/1.1\r\nHost: x\r\n\r\n`;
      socket.write(head);
    });
    socket.on('error', () => {});
    await eventually(() => answered === 11, 'answers');
    await sleep(50);
    socket.destroy();
    await sleep(50);
    expect({ atMost4: most <= 4, warnings }).toEqual({ atMost4: true, warnings: [] });
  } finally {
    process.off('warning', onWarn);
    await server.close();
  }
});
