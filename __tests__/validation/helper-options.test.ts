import type { Redis } from 'ioredis';
import { configureBreaker } from '../../lib/breaker';
import { closeRedis, connectRedis } from '../../lib/connection';
import { pingRedis } from '../../lib/health';
import { subscribe } from '../../lib/pubsub';
import { useRedisServer } from '../helpers/redis';

// The helpers check their arguments as the factories do: a misspelt option or a timeout read from
// an environment variable ('5s') used to mean the default, or a 1 ms timer.

const server = useRedisServer();

describe('pingRedis, closeRedis, subscribe and configureBreaker refuse bad arguments, naming them', () => {
  it("pingRedis: a timeoutMs that is no number of ms, or an unknown option, rejects instead of failing the check (a '5s' was a 1 ms timer)", async () => {
    const redis = server.client() as Redis;
    await expect(pingRedis(redis, { timeoutMs: '5s' as never })).rejects.toThrow(
      new TypeError(
        'express-redis-kit: option "timeoutMs" must be a number of ms from 1 to 2147483647; got "5s".',
      ),
    );
    await expect(pingRedis(redis, { timeoutMs: 0 })).rejects.toThrow(RangeError);
    await expect(pingRedis(redis, { timeout: 5 } as never)).rejects.toThrow(
      /option "timeout" is not a pingRedis option/,
    );
    await expect(pingRedis(redis, null as never)).rejects.toThrow(
      /option "options" of pingRedis must be an object/,
    );
    await expect(pingRedis(redis, { timeoutMs: 5000 })).resolves.toMatchObject({ ok: true });
    await expect(pingRedis(redis)).resolves.toMatchObject({ ok: true });
  });

  it('pingRedis and configureBreaker: an un-awaited connectRedis() is refused with the fix', async () => {
    const pending = connectRedis({ url: server.server.url, logger: false });
    try {
      await expect(pingRedis(pending as never)).rejects.toThrow(/a Promise.*await it first/);
      expect(() => configureBreaker(pending as never, { failureThreshold: 1 })).toThrow(
        /a Promise.*await it first/,
      );
      expect(() => configureBreaker(undefined as never, {})).toThrow(/option "redis" must be an ioredis/);
    } finally {
      await closeRedis(await pending);
    }
  });

  it('closeRedis: an unknown option or a timeoutMs out of range rejects, closing nothing', async () => {
    const redis = server.client() as Redis;
    await redis.ping();
    await expect(closeRedis(redis, { timeout: 5 } as never)).rejects.toThrow(
      /option "timeout" is not a closeRedis option/,
    );
    await expect(closeRedis(redis, { timeoutMs: 0 })).rejects.toThrow(RangeError);
    expect(redis.status).toBe('ready');
    await closeRedis(redis, { timeoutMs: 500 });
    expect(redis.status).toBe('end');
  });

  it('subscribe: a channel, handler or option of the wrong kind is refused before anything is subscribed', async () => {
    const redis = server.client() as Redis;
    const handler = () => {};
    await expect(subscribe(redis, '', handler)).rejects.toThrow(
      /option "channel" of subscribe must be a non-empty string/,
    );
    await expect(subscribe(redis, 'news', 'handler' as never)).rejects.toThrow(
      /option "handler" of subscribe must be a function/,
    );
    await expect(subscribe(redis, 'news', handler, { onReconect: () => {} } as never)).rejects.toThrow(
      /option "onReconect" is not a subscribe option/,
    );
    await expect(subscribe(redis, 'news', handler, { onReconnect: 'yes' } as never)).rejects.toThrow(
      TypeError,
    );
    await expect(subscribe({} as never, 'news', handler)).rejects.toThrow(
      /option "redis" must be an ioredis/,
    );
  });
});
