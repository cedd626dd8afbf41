import type Redis from 'ioredis';
import request from 'supertest';
import { closeRedis, createRedis } from '../../lib/connection';
import { pingRedis } from '../../lib/health';
import { freePort } from '../../lib/testing';
import { kitApp, timed } from './apps';
import { useSentinelSetup, waitFor } from './fixture';

const MASTER_PW = 'master-S3cret';
const SENTINEL_PW = 'sentinel-S3cret';

describe('sentinels that require a password', () => {
  const s = useSentinelSetup({ replicas: 1, masterPassword: MASTER_PW, sentinelPassword: SENTINEL_PW });

  it('sentinel.sentinelPassword (as the README documents) connects and serves every middleware', async () => {
    const redis = s.track(
      createRedis({ sentinel: s.setup.sentinelOption(), password: MASTER_PW, logger: false }),
    );
    const { app } = kitApp(redis, 'auth1:');
    await waitFor(async () => (await pingRedis(redis)).ok, 'healthy', 5000);
    expect((await request(app).get('/limited')).body.remaining).toBe(999);
    const agent = request.agent(app);
    await agent.post('/login').send({ user: 'u' }).expect(200);
    expect((await agent.get('/me')).body).toEqual({ userId: 'u' });
  });

  it('a top-level sentinelPassword (an ioredis option, "passed to ioredis unchanged") is honoured or refused, not dropped', async () => {
    const { sentinelPassword: _, ...sentinel } = s.setup.sentinelOption();
    let redis: ReturnType<typeof createRedis> | undefined;
    let thrown: unknown;
    try {
      redis = s.track(
        createRedis({ sentinel, sentinelPassword: SENTINEL_PW, password: MASTER_PW, logger: { warn() {} } }),
      );
    } catch (error) {
      thrown = error;
    }
    if (thrown) {
      // Refused at construction, like "sentinel.password": fine.
      expect(String(thrown)).toMatch(/sentinelPassword/);
      return;
    }
    const health = await (async () => {
      const until = Date.now() + 5000;
      let h = await pingRedis(redis!);
      while (!h.ok && Date.now() < until) h = await pingRedis(redis!);
      return h;
    })();
    expect({ ok: health.ok, error: health.error }).toEqual({ ok: true, error: undefined });
  }, 15_000);

  it('failFast with a wrong sentinel password: rejects in bounded time, saying what is wrong, no password shown', async () => {
    const started = Date.now();
    const error = await createRedis({
      sentinel: { ...s.setup.sentinelOption(), sentinelPassword: 'wrong-Pa55' },
      password: MASTER_PW,
      logger: false,
      failFast: true,
    }).then(
      (c) => {
        void closeRedis(c);
        return undefined;
      },
      (e: Error) => e,
    );
    const took = Date.now() - started;
    expect(error).toBeInstanceOf(Error);
    expect(took).toBeLessThan(5000);
    const message = String(error?.message);
    expect(message).not.toMatch(/wrong-Pa55|master-S3cret|sentinel-S3cret/);
    // It names the sentinels and the cause (auth), not "no answer" and REDIS_URL.
    expect(message).toMatch(/WRONGPASS|NOAUTH|password|auth/i);
  }, 15_000);
});

describe('sentinels that cannot be reached, or hang', () => {
  const s = useSentinelSetup({ replicas: 1 });

  it('failFast with every sentinel down: rejects within ~3 s with a clear message', async () => {
    const ports = [await freePort(), await freePort()];
    const started = Date.now();
    const error = await createRedis({
      sentinel: {
        sentinels: ports.map((p) => `127.0.0.1:${p}`),
        name: 'mymaster',
        sentinelPassword: 'pw-XYZ',
      },
      password: 'master-XYZ',
      logger: false,
      failFast: true,
    }).then(
      () => undefined,
      (e: Error) => e,
    );
    const took = Date.now() - started;
    expect(error).toBeInstanceOf(Error);
    expect(took).toBeLessThan(4500);
    expect(error!.message).toMatch(/sentinel master "mymaster"/);
    expect(error!.message).not.toMatch(/pw-XYZ|master-XYZ/);
    // What failed (no sentinel answered; which ones), and a hint that fits a sentinel setup.
    expect(error!.message).toMatch(/sentinel/i);
    expect(error!.message).toMatch(new RegExp(`unreachable|${ports[0]}`));
    expect(error!.message).not.toMatch(/REDIS_URL/);
  }, 15_000);

  it('one hung sentinel (SIGSTOP, first in the list) does not keep the client off a healthy deployment', async () => {
    const [first, ...rest] = s.setup.sentinels;
    first!.pause();
    try {
      const redis = s.client() as Redis;
      const { app } = kitApp(redis, 'hung:');
      // Two of three sentinels answer; the master is up.
      let health = await pingRedis(redis);
      const until = Date.now() + 10_000;
      while (!health.ok && Date.now() < until) health = await pingRedis(redis);
      const limited = await timed(request(app).get('/limited'));
      expect({
        ok: health.ok,
        status: redis.status,
        remaining: (limited.body as { remaining?: number }).remaining,
      }).toEqual({
        ok: true,
        status: 'ready',
        remaining: 999,
      });
      expect(rest.length).toBe(2);
    } finally {
      first!.resume();
    }
  }, 30_000);

  it('with sentinelCommandTimeout passed through (the suggested default), a hung first sentinel is skipped', async () => {
    const [first] = s.setup.sentinels;
    first!.pause();
    try {
      const redis = s.client({ sentinelCommandTimeout: 1000 } as object) as Redis;
      await waitFor(async () => (await pingRedis(redis)).ok, 'healthy through the other sentinels', 10_000);
      expect(redis.status).toBe('ready');
    } finally {
      first!.resume();
    }
  }, 30_000);

  it('failFast (3 s budget) with one hung sentinel first in the list connects through the others (sentinelCommandTimeout: 1000)', async () => {
    const [first] = s.setup.sentinels;
    first!.pause();
    try {
      const started = Date.now();
      const result = await createRedis({
        sentinel: s.setup.sentinelOption(),
        sentinelCommandTimeout: 1000,
        logger: false,
        failFast: true,
      } as Parameters<typeof createRedis>[0] & { failFast: true }).then(
        async (c) => {
          await closeRedis(c, { timeoutMs: 200 });
          return 'connected';
        },
        (e: Error) => e.message,
      );
      expect({ result, within3s: Date.now() - started < 3500 }).toEqual({
        result: 'connected',
        within3s: true,
      });
    } finally {
      first!.resume();
    }
  }, 30_000);
});
