import express from 'express';
import request from 'supertest';
import { closeRedis } from '../../lib/connection';
import { rateLimit } from '../../lib/rate-limit';
import { sleep } from '../cache/helpers';
import { useRedisServer } from '../helpers/redis';

const redis = useRedisServer();

// closeRedis is "about twice timeoutMs" (README) and, as before 1af2190, resolves once the client has ended
// (close-long-timeout.test.ts: it must not resolve while the client is still open).
it('a hung Redis with kit work in flight: closeRedis resolves with the client ended', async () => {
  const timeoutMs = 1000;
  const client = redis.client({ commandTimeout: 10_000 });
  await client.ping();
  const app = express();
  app.get('/', rateLimit({ redis: client, limit: 5, window: '1m', timeout: 10_000 }), (_req, res) =>
    res.send('ok'),
  );
  const pid = redis.server.pid!;
  process.kill(pid, 'SIGSTOP');
  try {
    const pending = request(app)
      .get('/')
      .then(
        () => undefined,
        () => undefined,
      );
    await sleep(50);
    const started = performance.now();
    await closeRedis(client, { timeoutMs });
    const took = Math.round(performance.now() - started);
    void pending;
    expect({ status: client.status, took: took < 2 * timeoutMs + 200 }).toEqual({
      status: 'end',
      took: true,
    });
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}, 15_000);
