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

type Kind = 'limiter+idempotency' | 'limiter' | 'limiter+cache' | 'cache, 64 KiB each';

it.each<[Kind, number]>([
  ['limiter+idempotency', 6],
  ['limiter', 11],
  ['limiter+cache', 11],
  // Queued, each write past 16 KiB is held back by the cache's capture, which watches the connection.
  ['cache, 64 KiB each', 11],
])(
  '%s, %i requests pipelined behind a slow one: the connection stays within a few listeners, with no warning',
  async (kind, n) => {
    const client = redis.client();
    const app = express();
    let answered = 0;
    let socketSeen: Socket | undefined;
    let most = 0;
    const count = () => {
      most = Math.max(most, socketSeen?.listenerCount('close') ?? 0);
    };
    app.get('/slow', (req, res) => {
      socketSeen = req.socket;
      setTimeout(() => res.end('slow'), 500);
    });
    const limiter = rateLimit({
      redis: client,
      limit: 1000,
      window: '1m',
      name: `pl-${kind.replace(/[^A-Za-z0-9]/g, '')}`,
      key: () => 'k',
      skipFailedRequests: true,
      skipSuccessfulRequests: kind === 'limiter+cache',
    });
    const cache = () => cacheResponse({ redis: client, ttl: 60, logger: quietLogger() });
    const done = (_req: express.Request, res: express.Response) => {
      if (kind === 'cache, 64 KiB each') {
        res.write(Buffer.alloc(64 * 1024, 'a'));
        res.end();
      } else res.status(201).json({ ok: 1 });
      answered += 1;
      count();
      setImmediate(count);
    };
    const method = kind === 'limiter+idempotency' || kind === 'limiter' ? 'POST' : 'GET';
    if (kind === 'limiter+idempotency') app.post('/x/:i', limiter, idempotency({ redis: client }), done);
    else if (kind === 'limiter') app.post('/x/:i', limiter, done);
    else if (kind === 'limiter+cache') app.get('/x/:i', limiter, cache(), done);
    else app.get('/x/:i', cache(), done);
    const server = await listen(app);
    const warnings: string[] = [];
    const onWarn = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarn);
    try {
      const socket = connect(Number(new URL(server.url).port), '127.0.0.1', () => {
        let head = 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n';
        for (let i = 0; i < n; i++)
          head += `${method} /x/${i} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: pk-${i}\r\nContent-Length: 0\r\n\r\n`;
        socket.write(head);
      });
      socket.on('error', () => {});
      socket.resume();
      await eventually(() => answered === n, 'answers');
      await sleep(50);
      socket.destroy();
      await sleep(50);
      // One per connection, plus Node's own: far below its limit of 10, however many wait.
      expect({ atMost4: most <= 4, warnings }).toEqual({ atMost4: true, warnings: [] });
    } finally {
      process.off('warning', onWarn);
      await server.close();
    }
  },
);
