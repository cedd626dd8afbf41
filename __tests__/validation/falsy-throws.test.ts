import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { useRedisServer } from '../helpers/redis';

// Express reads a falsy next(error) as "carry on": a callback that throws or rejects with
// undefined, null or '' must still stop the request, not skip the middleware.
const redis = useRedisServer();

const falsy = [
  [
    'throws undefined',
    () => {
      throw undefined;
    },
  ],
  ['rejects with null', () => Promise.reject(null)],
  ['rejects with an empty string', () => Promise.reject('')],
] as const;

/** A 500 from Express's final handler, and how often the route ran. */
async function twice(app: express.Express, send: (agent: request.Agent) => request.Test) {
  const agent = request.agent(app);
  const a = await send(agent);
  const b = await send(agent);
  return [a.status, b.status];
}

describe.each(falsy)('a callback that %s', (_title, callback) => {
  it('rateLimit: the request is not let through uncounted', async () => {
    let runs = 0;
    const app = express();
    app.get(
      '/',
      rateLimit({ redis: redis.client(), limit: 1, window: '1m', key: callback as never }),
      (_req, res) => {
        res.json({ runs: ++runs });
      },
    );
    expect([...(await twice(app, (agent) => agent.get('/'))), runs]).toEqual([500, 500, 0]);
  });

  it('idempotency: the handler does not run without its record', async () => {
    let runs = 0;
    const app = express();
    app.post('/orders', idempotency({ redis: redis.client(), scope: callback as never }), (_req, res) => {
      res.status(201).json({ runs: ++runs });
    });
    const send = (agent: request.Agent) => agent.post('/orders').set('Idempotency-Key', 'k1');
    expect([...(await twice(app, send)), runs]).toEqual([500, 500, 0]);
  });
});

describe.each([undefined, null, ''])('a key callback that throws %p', (value) => {
  it('cacheResponse: the route does not run past the cache', async () => {
    let runs = 0;
    const app = express();
    const key = () => {
      throw value;
    };
    app.get('/p', cacheResponse({ redis: redis.client(), ttl: '1m', key }), (_req, res) => {
      res.json({ runs: ++runs });
    });
    expect([...(await twice(app, (agent) => agent.get('/p'))), runs]).toEqual([500, 500, 0]);
  });
});
