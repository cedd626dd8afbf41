import type { Algorithm } from '../../lib/rate-limit';
import { useRedisServer } from '../helpers/redis';
import { buildApp, type RouteConfig } from './fixtures/app';
import { hit, listen, sleep } from './fixtures/http';
import { type Instance, startInstance } from './fixtures/spawn';

const ALGORITHMS: Algorithm[] = ['fixed-window', 'sliding-window', 'token-bucket', 'gcra'];

// Long windows for exact counts (no refill or window roll during a burst); short ones for refill.
const routes: Record<string, RouteConfig> = {};
for (const algorithm of ALGORITHMS) {
  routes[`burst-${algorithm}`] = { algorithm, limit: 25, window: '1h' };
  routes[`weighted-${algorithm}`] = { algorithm, limit: 20, window: '1h' };
}

describe('rateLimit algorithms across two app instances', () => {
  const redis = useRedisServer();
  let a: { url: string; close(): Promise<void> };
  let b: Instance;

  beforeAll(async () => {
    a = await listen(buildApp(redis.plain(), routes));
    b = await startInstance(redis.server.url, routes);
  });
  afterAll(async () => {
    await a?.close();
    await b?.stop();
  });

  describe.each(ALGORITHMS)('%s', (algorithm) => {
    it('allows exactly `limit` of 80 concurrent requests split over two processes, never more', async () => {
      const requests = Array.from({ length: 80 }, (_, i) =>
        hit(i % 2 ? a.url : b.url, `/burst-${algorithm}`, 'crowd'),
      );
      const statuses = (await Promise.all(requests)).map((r) => r.status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(25);
      expect(statuses.filter((s) => s === 429)).toHaveLength(55);
    });

    it('counts weighted cost: a request passes only while its whole cost fits', async () => {
      const client = `weighted-${Date.now()}`;
      expect((await hit(a.url, `/weighted-${algorithm}?cost=15`, client)).status).toBe(200);
      expect((await hit(b.url, `/weighted-${algorithm}?cost=6`, client)).status).toBe(429);
      const last = await hit(b.url, `/weighted-${algorithm}?cost=5`, client);
      expect(last.status).toBe(200);
      expect(JSON.parse(last.body)).toMatchObject({ limit: 20, remaining: 0, used: 20 });
      expect((await hit(a.url, `/weighted-${algorithm}?cost=1`, client)).status).toBe(429);
    });

    it('keeps different client keys apart', async () => {
      const statuses = await Promise.all(
        Array.from({ length: 10 }, (_, i) => hit(a.url, `/burst-${algorithm}`, `separate-${i}`)),
      );
      expect(statuses.every((r) => r.status === 200)).toBe(true);
    });
  });
});

describe('rateLimit refill and reset over time', () => {
  const redis = useRedisServer();
  let app: { url: string; close(): Promise<void> };

  beforeAll(async () => {
    app = await listen(
      buildApp(redis.plain(), {
        fixed: { algorithm: 'fixed-window', limit: 3, window: 1000 },
        sliding: { algorithm: 'sliding-window', limit: 3, window: 1500 },
        bucket: { algorithm: 'token-bucket', limit: 4, window: 2000 },
        gcra: { algorithm: 'gcra', limit: 4, window: 2000 },
      }),
    );
  });
  afterAll(() => app?.close());

  it('fixed-window: denies within the aligned window and allows a full quota once it rolls over', async () => {
    const results = [];
    for (let i = 0; i < 4; i++) results.push(await hit(app.url, '/fixed', 'fw'));
    const statuses = results.map((r) => r.status);
    // A window edge may fall inside the loop: then the 4th request opens a new window.
    if (statuses[3] === 429) {
      expect(statuses).toEqual([200, 200, 200, 429]);
      expect(Number(results[3]!.headers.get('retry-after'))).toBe(1);
      const resetMs = JSON.parse((await hit(app.url, '/fixed', 'fw')).body)?.resetMs;
      await sleep((resetMs ?? 1000) + 100);
    } else {
      await sleep(1100);
    }
    const after = [];
    for (let i = 0; i < 3; i++) after.push((await hit(app.url, '/fixed', 'fw')).status);
    expect(after).toEqual([200, 200, 200]);
  });

  it('sliding-window: a request counts for exactly one window after it was made, then frees its slot', async () => {
    for (let i = 0; i < 3; i++) expect((await hit(app.url, '/sliding', 'sw')).status).toBe(200);
    const denied = await hit(app.url, '/sliding', 'sw');
    expect(denied.status).toBe(429);
    expect(Number(denied.headers.get('retry-after'))).toBe(2);
    await sleep(500);
    expect((await hit(app.url, '/sliding', 'sw')).status).toBe(429);
    await sleep(1200);
    for (let i = 0; i < 3; i++) expect((await hit(app.url, '/sliding', 'sw')).status).toBe(200);
    expect((await hit(app.url, '/sliding', 'sw')).status).toBe(429);
  });

  it.each([
    ['token-bucket', '/bucket'],
    ['gcra', '/gcra'],
  ])('%s: a burst of `limit`, then one more request per window/limit', async (_name, path) => {
    const client = `refill-${path}`;
    for (let i = 0; i < 4; i++) expect((await hit(app.url, path, client)).status).toBe(200);
    const denied = await hit(app.url, path, client);
    expect(denied.status).toBe(429);
    // One unit refills every 500 ms: Retry-After rounds that up to 1 s.
    expect(Number(denied.headers.get('retry-after'))).toBe(1);
    await sleep(700);
    expect((await hit(app.url, path, client)).status).toBe(200);
    expect((await hit(app.url, path, client)).status).toBe(429);
    await sleep(2200);
    const burst = [];
    for (let i = 0; i < 5; i++) burst.push((await hit(app.url, path, client)).status);
    expect(burst).toEqual([200, 200, 200, 200, 429]);
  });
});
