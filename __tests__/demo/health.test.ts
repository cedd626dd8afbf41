import request from 'supertest';
import { createApp } from '../../demo-app/app';
import { useRedisServer } from '../helpers/redis';

describe('demo /healthz', () => {
  const redis = useRedisServer();

  it('answers 200 with the Redis latency and mode', async () => {
    const app = createApp({ redis: redis.client() });
    const res = await request(app).get('/healthz').expect(200);
    expect(res.body).toEqual({
      status: 'ok',
      redis: { ok: true, latencyMs: expect.any(Number), mode: 'standalone' },
    });
  });

  it('answers 503 within 1 s once Redis is killed, instead of hanging', async () => {
    const app = createApp({ redis: redis.client() });
    await request(app).get('/healthz').expect(200);
    await redis.server.kill();
    const started = Date.now();
    const res = await request(app).get('/healthz').expect(503);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(res.body.status).toBe('unavailable');
    await redis.server.restart();
  });
});
