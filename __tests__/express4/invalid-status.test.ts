import request from 'supertest';
import type { RedisClient } from '../../lib/client';
import { idempotency } from '../../lib/idempotency';
import { redisSession } from '../../lib/session';
import { useFlushedClient, useRedisServer } from '../helpers/redis';

const express = require('express4') as typeof import('express');
const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

// A common Express 4 idiom: `res.status(err.status)` where the error carries no status.
const badStatus = (res: import('express').Response) => (res.status as (c: unknown) => typeof res)(undefined);
const onError = (err: Error, _req: unknown, res: import('express').Response, _next: unknown) => {
  res.status(500).json({ error: err.message });
};

async function outcome(app: import('express').Express, key?: string) {
  const r = request(app).post('/x').send({ a: 1 });
  if (key) r.set('Idempotency-Key', key);
  return r.then(
    (res) => `${res.status}`,
    (error: Error) => error.message,
  );
}

describe('Express 4: a handler that sets a status Node refuses (res.status(undefined))', () => {
  it('without the kit: Express answers 500 through the error handler', async () => {
    const app = express();
    app.use(express.json());
    app.post('/x', (_req, res) => {
      badStatus(res).json({ ok: true });
    });
    app.use(onError);
    expect(await outcome(app)).toBe('500');
  });

  it('behind idempotency(): still answers 500 through the error handler', async () => {
    const app = express();
    app.use(express.json());
    app.post('/x', idempotency({ redis: client }), (_req, res) => {
      badStatus(res).json({ ok: true });
    });
    app.use(onError);
    expect(await outcome(app, 'k1')).toBe('500');
  });

  it('behind redisSession() with a changed session: still answers 500 through the error handler', async () => {
    const sessions = redisSession({ redis: client, secret: 'x'.repeat(32), cookie: { secure: false } });
    const app = express();
    app.use(express.json());
    app.use(sessions);
    app.post('/x', (req, res) => {
      (req.session as unknown as Record<string, unknown>).seen = 1;
      badStatus(res).json({ ok: true });
    });
    app.use(onError);
    expect(await outcome(app)).toBe('500');
  });

  it('behind idempotency(): a status Node refuses (42) is not stored for replay', async () => {
    const app = express();
    app.use(express.json());
    let runs = 0;
    app.post('/x', idempotency({ redis: client }), (_req, res) => {
      runs++;
      (res.status as (c: unknown) => typeof res)(42).json({ ok: true });
    });
    app.use(onError);
    const first = await outcome(app, 'k2');
    const retry = await outcome(app, 'k2');
    const stored = await client.keys('erk:*idem*');
    const statuses = await Promise.all(stored.map((k) => client.hget(k, 'status')));
    expect({ first, retry, runs, statuses }).toEqual({ first: '500', retry: '500', runs: 2, statuses: [] });
  });
});
