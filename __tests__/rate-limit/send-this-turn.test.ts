import type { Redis } from 'ioredis';
import { rateLimit } from '../../lib/rate-limit';
import { useRedisServer } from '../helpers/redis';
import { callLimiter as call, countWrites } from './fixtures/direct';

/** Records every command the client hands to its connection, by name, in order. */
function recordSent(redis: Redis): string[] {
  const sent: string[] = [];
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
    sent.push(command.name);
    return (send as (...args: unknown[]) => unknown)(command, ...rest);
  }) as Redis['sendCommand'];
  return sent;
}

describe('rateLimit sends a turn of coalesced decisions at once', () => {
  const server = useRedisServer();

  async function pipeliningClient(): Promise<Redis> {
    const redis = server.client({ enableAutoPipelining: true }) as Redis;
    await redis.ping();
    return redis;
  }

  it('on an auto-pipelining client, the decision leaves in the turn that flushes it, not one turn later', async () => {
    const redis = await pipeliningClient();
    const limiter = rateLimit({ redis, limit: 10, window: '1m', key: () => 'now', timeout: 2000 });
    await call(limiter); // loads the script, so what follows is the EVALSHA of one decision
    const sent = recordSent(redis);
    const answered = call(limiter);
    // Scheduled after the limiter's flush: runs right after it, in the same check phase. An
    // auto-pipeline's own setImmediate, scheduled from that phase, would run only in the next turn.
    const sameTurn = new Promise<void>((resolve) => setImmediate(() => resolve(void sent.push('same turn'))));
    await sameTurn;
    expect(await answered).toBe('allowed');
    expect(sent).toEqual(['evalsha', 'same turn']);
    // The app's own setting is left as it was: its other calls are still auto-pipelined.
    expect(redis.options.enableAutoPipelining).toBe(true);
    const get = redis.get('other');
    expect(sent).toEqual(['evalsha', 'same turn']);
    await get;
    expect(sent).toEqual(['evalsha', 'same turn', 'get']);
  });

  it('joins an auto-pipeline already pending, so a call made earlier in the turn reaches Redis first', async () => {
    const redis = await pipeliningClient();
    const limiter = rateLimit({ redis, limit: 10, window: '1m', key: () => 'order', timeout: 2000 });
    await call(limiter);
    const sent = recordSent(redis);
    const answered = call(limiter);
    // Made after the request but before the flush: queued in an auto-pipeline that leaves after the
    // flush, in the same check phase (a reset() or another middleware's call would be the same).
    const earlier = redis.get('earlier');
    expect(await answered).toBe('allowed');
    await earlier;
    expect(sent).toEqual(['get', 'evalsha']);
  });

  it("sends several clients' decisions of one turn in one write", async () => {
    const redis = server.plain();
    await redis.ping();
    let key = 0;
    const limiter = rateLimit({
      redis,
      limit: 10,
      window: '1m',
      key: () => `writer-${key++ % 3}`,
      timeout: 2000,
    });
    await Promise.all([call(limiter), call(limiter), call(limiter)]); // loads the script
    const counted = countWrites(redis.stream);
    try {
      const answers = await Promise.all([call(limiter), call(limiter), call(limiter)]);
      expect(answers).toEqual(['allowed', 'allowed', 'allowed']);
      expect(counted.writes).toEqual([3]);
    } finally {
      counted.restore();
    }
  });
});
