import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import express from 'express';
import request from 'supertest';
import * as kit from '../../lib';
import * as errors from '../../lib/errors';
import { redisSession } from '../../lib/session';
import { KIT_VERSION } from '../../lib/version';
import { expectRefreshUncharged } from '../cache/helpers';
import { useRedisServer } from '../helpers/redis';

/** A second copy of the kit's errors, as an app that both imports and requires the kit loads. */
function otherCopy(): typeof errors {
  let copy: typeof errors | undefined;
  jest.isolateModules(() => {
    copy = require('../../lib/errors');
  });
  expect(copy!.RedisUnavailableError).not.toBe(errors.RedisUnavailableError);
  return copy!;
}

/** A second copy of the whole kit. */
function otherKit(): typeof kit {
  let copy: typeof kit | undefined;
  jest.isolateModules(() => {
    copy = require('../../lib');
  });
  expect(copy!.cacheResponse).not.toBe(kit.cacheResponse);
  return copy!;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('errors from another copy of the kit (its ESM and CommonJS builds both loaded)', () => {
  const redis = useRedisServer();

  it('are instances of this copy’s classes, by family, and other errors are not', () => {
    const other = otherCopy();
    const refused = new other.RedisRefusedError('OOM');
    const timeout = new other.RedisTimeoutError(100);
    expect(refused instanceof errors.RedisUnavailableError).toBe(true);
    expect(refused instanceof errors.RedisRefusedError).toBe(true);
    expect(refused instanceof errors.RedisTimeoutError).toBe(false);
    expect(timeout instanceof errors.RedisTimeoutError).toBe(true);
    expect(new other.RedisUnavailableError('down') instanceof errors.RedisRefusedError).toBe(false);
    expect(new other.SessionEndedError() instanceof errors.SessionEndedError).toBe(true);
    const another = otherKit();
    expect(new another.LockBusyError('l') instanceof kit.LockBusyError).toBe(true);
    expect(new another.LockLostError('l') instanceof kit.LockLostError).toBe(true);
    expect(new another.LockLostError('l') instanceof kit.LockBusyError).toBe(false);
    expect(new another.CorruptEntryError('bad') instanceof kit.CorruptEntryError).toBe(true);
    // This copy's own errors, subclasses and unrelated errors keep plain instanceof semantics.
    expect(new errors.RedisTimeoutError(1) instanceof errors.RedisUnavailableError).toBe(true);
    expect(new errors.RedisUnavailableError('x') instanceof errors.RedisTimeoutError).toBe(false);
    expect(new Error('x') instanceof errors.RedisUnavailableError).toBe(false);
    expect(
      Object.assign(new Error('x'), { code: 'ECONNREFUSED' }) instanceof errors.RedisUnavailableError,
    ).toBe(false);
    expect({ code: 'ERK_REDIS_REFUSED' } instanceof errors.RedisUnavailableError).toBe(false);
  });

  it('are answered by handleErrors with the 503 problem, not passed on as a 500', async () => {
    const other = otherCopy();
    const sessions = redisSession({ redis: redis.client(), secret: 'x'.repeat(32) });
    const app = express();
    app.get('/', () => {
      throw new other.RedisRefusedError('OOM command not allowed');
    });
    app.use(sessions.handleErrors);
    const res = await request(app).get('/');
    expect(res.status).toBe(503);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
  });
});

describe('objects another copy of the kit hands this one', () => {
  const redis = useRedisServer();

  it("a background refresh by the other copy's cache is not charged by this copy's rateLimit", async () => {
    const other = otherKit();
    const client = redis.client();
    const limiter = kit.rateLimit({
      redis: client,
      limit: 5,
      window: '1m',
      key: () => 'client',
      headers: false,
    });
    await expectRefreshUncharged(
      limiter,
      other.cacheResponse({ redis: client, ttl: 300, jitter: 0, staleWhileRevalidate: '1m', l1: false }),
    );
  });

  it("cacheResponse takes the other copy's createCache() of the same version, and names a different version", async () => {
    const other = otherKit();
    const logger = { warn: () => {} };
    const common = { l1: false as const, timeout: 150, logger };
    const cache = other.createCache({ redis: redis.client(), ...common });
    // The same settings given again are no conflict across copies either.
    const app = express().get('/shared', kit.cacheResponse({ cache, ttl: '1m', ...common }), (_req, res) => {
      res.send('v1');
    });
    expect((await request(app).get('/shared')).headers['x-cache']).toBe('MISS');
    await sleep(100);
    expect((await request(app).get('/shared')).headers['x-cache']).toBe('HIT');
    const older = Object.defineProperty({}, Symbol.for('express-redis-kit.cache'), { value: '0.0.1' });
    expect(() => kit.cacheResponse({ cache: older as never, ttl: '1m' })).toThrow(
      /option "cache" was made by createCache\(\) of express-redis-kit 0\.0\.1, another copy than this cacheResponse's.*npm ls express-redis-kit/,
    );
    expect(() => kit.cacheResponse({ cache: {} as never, ttl: '1m' })).toThrow(
      /option "cache" must be a cache made by createCache\(\)/,
    );
  });

  it('the version the copies compare is the package version', () => {
    const pkg = JSON.parse(readFileSync(join(__dirname, '../../package.json'), 'utf8')) as {
      version: string;
    };
    expect(KIT_VERSION).toBe(pkg.version);
  });
});
