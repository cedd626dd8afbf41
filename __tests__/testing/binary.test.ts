import { findRedisServer, RedisServerNotFoundError, startRedisServer } from '../../lib/testing';

describe('the binary option', () => {
  const previous = process.env.REDIS_SERVER_BIN;
  afterEach(() => {
    if (previous === undefined) delete process.env.REDIS_SERVER_BIN;
    else process.env.REDIS_SERVER_BIN = previous;
  });

  it('names the binary option, not REDIS_SERVER_BIN, when the path came from the option', async () => {
    delete process.env.REDIS_SERVER_BIN;
    const error = await startRedisServer({ binary: '/nonexistent/redis-server' }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(error).toBeInstanceOf(RedisServerNotFoundError);
    expect(error!.message).toMatch(
      /option "binary" \(\/nonexistent\/redis-server\) is not an executable file/,
    );
    expect(error!.message).not.toMatch(/REDIS_SERVER_BIN=/);
  });

  it('still names REDIS_SERVER_BIN when the path came from it', () => {
    process.env.REDIS_SERVER_BIN = '/nonexistent/from-env';
    expect(() => findRedisServer()).toThrow(
      /REDIS_SERVER_BIN=\/nonexistent\/from-env is not an executable file/,
    );
  });
});
