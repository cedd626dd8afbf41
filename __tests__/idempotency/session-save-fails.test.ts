import express from 'express';
import request from 'supertest';
import type { RedisClient } from '../../lib/client';
import { idempotency } from '../../lib/idempotency';
import { redisSession } from '../../lib/session';
import { useFlushedClient, useRedisServer } from '../helpers/redis';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

// README, "Under redisSession()": when the session cannot be saved after the handler answered (data
// JSON cannot encode, Redis refusing the write), the client gets the session's 500/503 and its retry
// gets the stored answer, in either order of the two middlewares. Releasing the key instead would
// run the handler twice.
const ORDERS = [
  ['session, then idempotency (README example)', 'SI'],
  ['idempotency app-wide, then session', 'IS'],
] as const;

/**
 * The two middlewares in `order` and a charging route whose `change` to the session makes its save
 * fail; the first answer is the session's `status`, the retry must replay the handler's 201.
 */
async function chargeTwice(
  order: string,
  change: (session: Record<string, unknown>) => unknown,
  status: number,
  afterFirst: () => Promise<unknown> = async () => {},
) {
  const sessions = redisSession({ redis: client, secret: 's'.repeat(40) });
  const idem = idempotency({ redis: client });
  const app = express();
  app.use(express.json());
  for (const m of order) app.use(m === 'S' ? sessions : idem);
  let charged = 0;
  app.post('/charge', async (req, res) => {
    charged++;
    await change(req.session as unknown as Record<string, unknown>);
    res.status(201).json({ charge: charged });
  });
  const first = await request(app).post('/charge').set('Idempotency-Key', 'c1').send({ amount: 5 });
  expect(first.status).toBe(status);
  await afterFirst();
  const retry = await request(app).post('/charge').set('Idempotency-Key', 'c1').send({ amount: 5 });
  expect(charged).toBe(1);
  expect(retry.status).toBe(201);
  expect(retry.headers['idempotent-replayed']).toBe('true');
  expect(retry.body).toEqual({ charge: 1 });
}

describe.each(ORDERS)('a session save that fails, %s', (_label, order) => {
  it('runs the handler once: the retry replays the stored answer', async () => {
    // A value JSON cannot encode: the session's save fails after the handler answered.
    await chargeTwice(
      order,
      (session) => {
        session.big = 10n;
      },
      500,
    );
  });
});

// The same with Redis itself refusing the session's write (memory full, noeviction), which the README
// says still lets an idempotent request reserved before it store its answer.
describe.each(ORDERS)('Redis out of memory while the handler runs, %s', (_label, order) => {
  afterEach(async () => {
    await client.config('SET', 'maxmemory', '0');
  });
  it('runs the handler once: the retry replays the stored answer', async () => {
    await chargeTwice(
      order,
      async (session) => {
        session.cart = 'paid';
        // Memory fills up while the handler works.
        await client.config('SET', 'maxmemory', '1');
      },
      503,
      () => client.config('SET', 'maxmemory', '0'),
    );
  });
});
