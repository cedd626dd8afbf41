import Redis from 'ioredis';
import request from 'supertest';
import { createCache } from '../../lib/cache';
import { closeRedis } from '../../lib/connection';
import { pingRedis } from '../../lib/health';
import { kitApp } from './apps';
import { sleep, useSentinelSetup, waitFor } from './fixture';

describe('normal operation through real Sentinels', () => {
  const s = useSentinelSetup();

  describe.each([
    ['a createRedis sentinel client', () => s.client()],
    ["the app's own new Redis({ sentinels, name })", () => s.own()],
  ])('%s', (_t, make) => {
    it('counts, caches, replays and keeps sessions on the master; pingRedis says sentinel', async () => {
      const redis = make();
      const prefix = `n${Math.random().toString(36).slice(2, 8)}:`;
      const { app, origin } = kitApp(redis, prefix);
      const rem: number[] = [];
      for (let i = 0; i < 5; i++) rem.push((await request(app).get('/limited')).body.remaining);
      expect(rem).toEqual([999, 998, 997, 996, 995]);

      const a = await request(app).get('/cached/1');
      const b = await request(app).get('/cached/1');
      expect([a.headers['x-cache'], b.headers['x-cache']]).toEqual(['MISS', 'HIT']);
      expect(origin.calls).toBe(1);

      const o1 = await request(app).post('/orders').set('Idempotency-Key', 'k1').send({ a: 1 });
      const o2 = await request(app).post('/orders').set('Idempotency-Key', 'k1').send({ a: 1 });
      expect([o1.status, o2.status, o2.body]).toEqual([201, 201, { order: 1 }]);

      const agent = request.agent(app);
      await agent.post('/login').send({ user: 'u1' }).expect(200);
      expect((await agent.get('/me')).body).toEqual({ userId: 'u1' });

      const h = await pingRedis(redis);
      expect([h.ok, h.mode]).toEqual([true, 'sentinel']);
      // Everything went to the master the sentinels name, and reached the replicas.
      const master = await s.setup.master();
      const adm = s.setup.admin(master.port);
      expect((await adm.keys(`${prefix}*`)).length).toBeGreaterThan(0);
    });
  });
});

describe('closeRedis on a Sentinel client', () => {
  const s = useSentinelSetup({ replicas: 1 });

  it("closes the failover detector's connections to the sentinels, the kit subscriber's too (quit() alone leaves them)", async () => {
    const redis = s.client() as Redis;
    const cache = createCache({ redis, prefix: 'cz:', logger: { warn() {} } });
    await cache.ready();
    await waitFor(() => redis.status === 'ready', 'ready');
    await sleep(500);
    /** Subscribed connections on the sentinels: the detectors' (+switch-master). */
    const subscribed = async () => {
      let n = 0;
      for (const sentinel of s.setup.sentinels) {
        const admin = new Redis({ port: sentinel.port, host: '127.0.0.1', retryStrategy: () => null });
        const list = (await admin.call('CLIENT', 'LIST')) as string;
        n += list.split('\n').filter((l) => / sub=[1-9]/.test(l)).length;
        admin.disconnect();
      }
      return n;
    };
    const before = await subscribed();
    await closeRedis(redis);
    await sleep(300);
    expect({ before: before > 0, after: await subscribed() }).toEqual({ before: true, after: 0 });
  }, 30_000);
});
