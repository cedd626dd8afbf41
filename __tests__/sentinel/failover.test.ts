import type Redis from 'ioredis';
import request from 'supertest';
import { pingRedis } from '../../lib/health';
import { kitApp, timed } from './apps';
import { sleep, useSentinelSetup, waitFor } from './fixture';

/**
 * What an app needs from a failover: every request during it answered in bounded time with its fail
 * mode, and afterwards every write the app was told succeeded is still there (rate-limit counts,
 * sessions, idempotency records), without a restart.
 */
describe('a failover of a real Sentinel deployment (1 master, 2 replicas, 3 sentinels)', () => {
  const s = useSentinelSetup();

  /** Requests made after the sentinels switched master; checked once the old master is demoted. */
  async function writesAfterTheSwitch(
    redis: Redis,
    prefix: string,
    switchOver: () => Promise<{ from: number }>,
  ) {
    const kit = kitApp(redis, prefix);
    const { app } = kit;
    const before = request.agent(app);
    await before.post('/login').send({ user: 'before' }).expect(200);
    for (let i = 0; i < 3; i++) await request(app).get('/limited').expect(200);
    // Replicated before the failover: nothing of it may be lost.
    // Within the client's 500 ms commandTimeout: a busy machine may take longer, so ask again.
    await waitFor(async () => Number(await redis.call('WAIT', '2', '300')) >= 2, 'both replicas', 10_000);

    const { from } = await switchOver();
    // The sentinels all name the new master now. Whatever the app writes from here on was
    // acknowledged after the switch.
    await waitFor(async () => (await pingRedis(redis)).ok, 'a healthy client', 10_000);
    // pingRedis does not go through the kit's circuit breaker; the timeouts of a frozen master open
    // it, and it lets calls through again after its cooldown (about 1 s).
    await sleep(1500);
    const after = request.agent(app);
    const login = await after.post('/login').send({ user: 'after' });
    const counted: number[] = [];
    for (let i = 0; i < 5; i++) counted.push((await request(app).get('/limited')).body.remaining);
    const order = await request(app).post('/orders').set('Idempotency-Key', 'after-1').send({ n: 1 });

    // The old master is a replica of the new one (sentinel reconfigured it).
    await s.setup.waitForReplica(from, 40_000);
    await waitFor(async () => (await request(app).get('/healthz')).status === 200, 'healthz again', 10_000);
    const me = await after.get('/me');
    const meBefore = await before.get('/me');
    const replay = await request(app).post('/orders').set('Idempotency-Key', 'after-1').send({ n: 1 });
    const next = (await request(app).get('/limited')).body.remaining;
    return {
      acknowledged: {
        login: login.status,
        counted: counted.every((r) => typeof r === 'number'),
        order: order.status,
      },
      sessionBefore: meBefore.body,
      sessionAfter: me.body,
      replay: { status: replay.status, body: replay.body, handlerRuns: kit.orders() },
      // 3 before + 5 after + this one.
      remaining: next,
    };
  }

  const expected = {
    acknowledged: { login: 200, counted: true, order: 201 },
    sessionBefore: { userId: 'before' },
    sessionAfter: { userId: 'after' },
    replay: { status: 201, body: { order: 1 }, handlerRuns: 1 },
    remaining: 1000 - 9,
  };

  it('SENTINEL FAILOVER: writes acknowledged after the switch survive (createRedis client)', async () => {
    const redis = s.client() as Redis;
    const result = await writesAfterTheSwitch(redis, 'g1:', () => s.setup.failover());
    expect(result).toEqual(expected);
  }, 90_000);

  it("SENTINEL FAILOVER: same with the app's own client given failoverDetector: true (as the README advises)", async () => {
    const redis = s.own({ failoverDetector: true });
    const result = await writesAfterTheSwitch(redis, 'g2:', () => s.setup.failover());
    expect(result).toEqual(expected);
  }, 90_000);

  it('master frozen (DEBUG SLEEP 6): requests get their fail mode in bounded time, writes after the switch survive (createRedis client)', async () => {
    const redis = s.client() as Redis;
    const during: Array<{ rl: number; me: number; ms: number }> = [];
    const result = await writesAfterTheSwitch(redis, 'g3:', async () => {
      const old = await s.setup.master();
      const agent = request.agent(kitApp(redis, 'g3:').app);
      s.setup
        .admin(old.port)
        .call('DEBUG', 'SLEEP', '6')
        .catch(() => {});
      const to = s.setup.waitForNewMaster(old.port);
      let switched = false;
      void to.then(() => (switched = true));
      while (!switched) {
        const rl = await timed(agent.get('/limited'), 3000);
        const me = await timed(agent.get('/me'), 3000);
        during.push({ rl: rl.status, me: me.status, ms: Math.max(rl.ms, me.ms) });
        await sleep(100);
      }
      // The old master is still asleep: the client's connection is on it.
      return { from: old.port };
    });
    // Bounded: no request hangs, none fails with anything but its fail mode.
    expect(during.filter((d) => d.ms > 1500 || d.rl !== 200 || ![200, 401, 503].includes(d.me))).toEqual([]);
    // Requests of the loop above that reached the new master count too: none of the 9 may be lost.
    expect(result).toEqual({ ...expected, remaining: expect.any(Number) });
    expect(result.remaining).toBeLessThanOrEqual(expected.remaining);
  }, 90_000);
});
