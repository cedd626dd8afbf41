import express from 'express';
import request from 'supertest';
import type { KitEvent } from '../../lib/events';
import { onKitEvent } from '../../lib/events';
import { rateLimit } from '../../lib/rate-limit';
import { useRedisServer } from '../helpers/redis';

const redis = useRedisServer({ args: ['--enable-debug-command', 'yes'] });

it('a redis-call event seen by a listener that subscribed while the call was in flight has its real duration', async () => {
  const client = redis.client();
  const admin = redis.plain();
  await client.ping();
  const app = express();
  app.use(rateLimit({ redis: client, limit: 5, window: '1m', timeout: 2000 }));
  app.get('/', (_q, res) => res.send('ok'));
  await request(app).get('/'); // scripts loaded
  // Busy Redis for 150 ms; the decision waits for it.
  const sleeping = admin.call('DEBUG', 'SLEEP', '0.15');
  await new Promise((r) => setTimeout(r, 10));
  const answer = request(app)
    .get('/')
    .then((r) => r);
  await new Promise((r) => setTimeout(r, 50));
  const calls: KitEvent[] = [];
  const off = onKitEvent((e) => {
    if (e.type === 'redis-call') calls.push(e);
  });
  try {
    await answer;
    await sleeping;
    expect(calls).toHaveLength(1);
    expect(calls[0]!.durationMs).toBeLessThan(1000);
  } finally {
    off();
  }
});
