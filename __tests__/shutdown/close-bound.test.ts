import express from 'express';
import request from 'supertest';
import { closeRedis } from '../../lib/connection';
import { rateLimit } from '../../lib/rate-limit';
import { sleep } from '../cache/helpers';
import { useRedisServer } from '../helpers/redis';

// README (Connection helpers): closeRedis waits up to timeoutMs for the kit's work, then sends QUIT
// and disconnects hard if Redis has not answered within timeoutMs more: "about twice timeoutMs in
// all, at most". A Redis that hangs (frozen host, SIGSTOP) while a kit call is in flight.
const redis = useRedisServer();

it.each([300, 1000])(
  'a hung Redis with kit work in flight: closeRedis(timeoutMs %i) takes at most about twice timeoutMs, and resolves with the client ended',
  async (timeoutMs) => {
    const client = redis.client({ commandTimeout: 10_000 });
    await client.ping();
    const app = express();
    app.get(
      '/',
      rateLimit({ redis: client, limit: 5, window: '1m', timeout: 10_000, prefix: `b${timeoutMs}:` }),
      (_req, res) => res.send('ok'),
    );
    const pid = redis.server.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      // Its decision call is in flight (counted by pending-work.ts) and never answered.
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
      // "About twice": twice, and room for a busy machine's timers (without the bound, 3x). And
      // ended, as close-long-timeout.test.ts requires: not resolved with the client still open.
      expect({ status: client.status, took: took < 2 * timeoutMs + 200 ? 'about twice' : took }).toEqual({
        status: 'end',
        took: 'about twice',
      });
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  },
  15_000,
);
