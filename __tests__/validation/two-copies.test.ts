import express from 'express';
import request from 'supertest';
import * as errors from '../../lib/errors';
import { redisSession } from '../../lib/session';
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
