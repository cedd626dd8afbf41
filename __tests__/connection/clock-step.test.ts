import express from 'express';
import Redis from 'ioredis';
import request from 'supertest';
import { configureBreaker } from '../../lib/breaker';
import { createCache, LockBusyError, withLock } from '../../lib/cache';
import { rateLimit } from '../../lib/rate-limit';
import { quietLogger } from '../cache/helpers';
import { stepWallClockBack } from '../helpers/clock';
import { eventually, useRedisServer } from '../helpers/redis';

// Waits and cool-downs run on the monotonic clock: NTP stepping the wall clock back must not stretch
// them by the step (a breaker held open, a wait that never ends).

const redis = useRedisServer();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let restoreClock = () => {};

afterEach(() => {
  restoreClock();
});

/** Rejects when `promise` has not settled within `ms` of real time. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    new Promise<T>((_, reject) =>
      setTimeout(() => reject(new Error(`${what} still waiting after ${ms} ms`)), ms),
    ),
  ]);
}

describe('a wall clock stepped back', () => {
  it('does not hold the circuit breaker open: once Redis answers again, the rate limit is enforced again', async () => {
    const client = redis.track(new Redis(redis.server.url, { retryStrategy: () => 50 }));
    client.on('error', () => {});
    const admin = redis.plain();
    configureBreaker(client, { failureThreshold: 1, cooldownMs: 100 });
    const app = express();
    app.get(
      '/',
      rateLimit({ redis: client, limit: 1, window: '1h', key: () => 'ntp', timeout: 100, denyCache: false }),
      (_req, res) => {
        res.send('ok');
      },
    );
    expect((await request(app).get('/')).status).toBe(200);
    expect((await request(app).get('/')).status).toBe(429);
    await admin.call('CLIENT', 'PAUSE', '400', 'ALL');
    // Times out: fails open, and the breaker opens.
    expect((await request(app).get('/')).status).toBe(200);
    restoreClock = stepWallClockBack();
    await sleep(500);
    await eventually(async () => (await admin.ping()) === 'PONG', 'Redis to answer again');
    await sleep(300);
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await request(app).get('/')).status);
    // The client used its 1 per hour: with Redis back, every request is denied again.
    expect(statuses).toEqual([429, 429, 429, 429, 429]);
  });

  it('does not stretch withLock’s wait for a busy lock', async () => {
    const client = redis.client();
    let release: () => void = () => {};
    const held = withLock(client, 'clock', () => new Promise<void>((resolve) => (release = resolve)), {
      ttl: '5s',
    });
    await eventually(() => release.name !== '', 'the first holder to take the lock');
    try {
      const waiting = withLock(client, 'clock', () => 'second', { ttl: '5s', wait: 300 });
      restoreClock = stepWallClockBack();
      await expect(within(waiting, 3000, 'withLock')).rejects.toBeInstanceOf(LockBusyError);
    } finally {
      release();
      await held;
    }
  });

  it('does not stretch a cache.wrap caller’s wait behind a fill that never finishes', async () => {
    // Two instances: within one, a second caller would share the first one's call.
    const options = { l1: false, lockTimeout: 100, logger: quietLogger() } as const;
    const first = createCache({ redis: redis.client(), ...options });
    const second = createCache({ redis: redis.client(), ...options });
    void first.wrap('k', () => new Promise<string>(() => {}), { ttl: '1m' });
    await sleep(100);
    const waiting = second.wrap('k', () => 'second', { ttl: '1m' });
    restoreClock = stepWallClockBack();
    // It gives up on the holder after 3 x lockTimeout and runs fn itself.
    expect(await within(waiting, 3000, 'cache.wrap')).toBe('second');
    await first.close();
    await second.close();
  });
});
