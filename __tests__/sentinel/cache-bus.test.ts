import type Redis from 'ioredis';
import request from 'supertest';
import { kitApp } from './apps';
import { sleep, useSentinelSetup, waitFor } from './fixture';

/**
 * Two app instances, each with its own client and L1. An invalidation one of them makes after a
 * failover must reach the other's L1 (README: "tells every other instance to drop them from its L1
 * over Redis pub/sub … within milliseconds").
 */
describe('cache L1 invalidations across two instances, through a Sentinel failover', () => {
  const s = useSentinelSetup();

  it.each([
    ['createRedis clients', () => s.client() as Redis],
    ['own clients with failoverDetector: true', () => s.own({ failoverDetector: true })],
  ])(
    '%s: an invalidation published after SENTINEL FAILOVER by an instance started since reaches the other instance',
    async (_t, make) => {
      const prefix = `cb${Math.random().toString(36).slice(2, 6)}:`;
      const a = kitApp(make(), prefix);
      let b = kitApp(make(), prefix);
      await a.shared.ready();
      await b.shared.ready();
      // A holds /cached/1 in its L1.
      expect((await request(a.app).get('/cached/1')).headers['x-cache']).toBe('MISS');
      expect((await request(a.app).get('/cached/1')).headers['x-cache']).toBe('HIT');
      expect(a.origin.calls).toBe(1);
      // Before the failover, B's invalidation reaches A.
      await request(b.app).post('/cached/1/invalidate').expect(200);
      await sleep(200);
      a.origin.version = 'v2';
      expect((await request(a.app).get('/cached/1')).body.version).toBe('v2');
      expect((await request(a.app).get('/cached/1')).headers['x-cache']).toBe('HIT');

      await s.setup.failover();
      // Instance B restarts (a deploy, a crash) right after the failover: it connects through the
      // sentinels, to the new master.
      b = kitApp(make(), prefix);
      await b.shared.ready();
      // Both caches subscribed again, wherever they are.
      await waitFor(
        async () => (await request(a.app).get('/cached/1')).headers['x-cache'] === 'HIT',
        'A serving from L1 again',
        15_000,
      );

      // B changes the data and invalidates (its call succeeds); A must not keep serving v2.
      a.origin.version = 'v3';
      b.origin.version = 'v3';
      const inv = await request(b.app).post('/cached/1/invalidate');
      expect(inv.status).toBe(200);
      await sleep(300);
      const seen = await request(a.app).get('/cached/1');
      expect({ version: seen.body.version, xCache: seen.headers['x-cache'] }).toEqual({
        version: 'v3',
        xCache: 'MISS',
      });
    },
    60_000,
  );
});
