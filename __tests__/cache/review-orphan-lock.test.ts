import express from 'express';
import request from 'supertest';
import { cacheResponse, createCache, LockBusyError, withLock } from '../../lib/cache';
import { RedisUnavailableError } from '../../lib/errors';
import { taggedKey } from '../../lib/keys';
import { eventually, useRedisServer } from '../helpers/redis';
import { quietLogger, sleep, waitForKeys } from './helpers';

const redis = useRedisServer();

/** Holds every command in Redis for `ms`, as a slow server would; commands then run in order. */
async function pause(ms: number): Promise<void> {
  await redis.plain().call('CLIENT', 'PAUSE', String(ms), 'ALL');
}

const noLock = async () => {
  const admin = redis.plain();
  await eventually(async () => (await admin.keys('erk:*lock*')).length === 0, 'no lock left in Redis', 2000);
};

beforeEach(async () => {
  await redis.plain().flushall();
});

describe('a lookup that timed out while Redis was slow', () => {
  it('leaves no fill lock behind: the next miss does not wait for lockTimeout', async () => {
    // A plain client has no commandTimeout: the late lookup is answered, and only then released.
    const mw = cacheResponse({
      redis: redis.plain(),
      ttl: '1m',
      l1: false,
      timeout: 100,
      lockTimeout: '3s',
      logger: quietLogger(),
    });
    let calls = 0;
    const app = express();
    app.get('/:page', mw, (req, res) => {
      calls++;
      res.send(`${req.params.page} ${calls}`);
    });
    await request(app).get('/warm');
    await waitForKeys(redis.plain(), 'erk:c:*');

    await pause(400);
    const slow = await request(app).get('/r');
    expect(slow.headers['x-cache']).toBe('BYPASS');
    await sleep(500);
    await noLock();

    const started = Date.now();
    const next = await request(app).get('/r');
    expect(next.headers['x-cache']).toBe('MISS');
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('cache.wrap: also when the client gave up on the command itself (createRedis commandTimeout)', async () => {
    // Paused beyond the client's 500 ms commandTimeout: ioredis drops the reply, the command still runs.
    const cache = createCache({
      redis: redis.client(),
      l1: false,
      timeout: 100,
      lockTimeout: '3s',
      logger: quietLogger(),
    });
    expect(await cache.wrap('warm', () => 'w', { ttl: '1m' })).toBe('w');

    await pause(800);
    expect(await cache.wrap('k', () => 'during', { ttl: '1m' })).toBe('during');
    await sleep(900);
    await noLock();

    const started = Date.now();
    expect(await cache.wrap('k', () => 'after', { ttl: '1m' })).toBe('after');
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe('withLock when taking the lock timed out', () => {
  const name = 'job';
  const key = taggedKey('erk:', 'lock', name);

  it('releases the lock that landed later, so the next withLock runs at once', async () => {
    const client = redis.client();
    await client.ping();
    await pause(400);
    await expect(
      withLock(client, name, () => 'never', { ttl: '10s', wait: 0, timeout: 100 }),
    ).rejects.toBeInstanceOf(RedisUnavailableError);
    await sleep(500);
    expect(await redis.plain().exists(key)).toBe(0);
    expect(await withLock(client, name, () => 'ran', { wait: 0 })).toBe('ran');
  });

  it('never releases a lock that belongs to someone else', async () => {
    const client = redis.plain();
    const admin = redis.plain();
    await admin.set(key, 'someone-else', 'PX', 10_000);
    await pause(300);
    await expect(withLock(client, name, () => 'never', { wait: 0, timeout: 100 })).rejects.toBeInstanceOf(
      RedisUnavailableError,
    );
    await sleep(400);
    expect(await admin.get(key)).toBe('someone-else');
    await expect(withLock(client, name, () => 'never', { wait: 0 })).rejects.toBeInstanceOf(LockBusyError);
  });
});
