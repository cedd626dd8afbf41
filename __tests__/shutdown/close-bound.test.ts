import { useRedisServer } from '../helpers/redis';
import { closeFrozen } from './fixtures/frozen';

// README (Connection helpers): closeRedis waits up to timeoutMs for the kit's work, then sends QUIT
// and disconnects hard if Redis has not answered within timeoutMs more: "about twice timeoutMs in
// all, at most". A Redis that hangs (frozen host, SIGSTOP) while a kit call is in flight.
const redis = useRedisServer();

it.each([300, 1000])(
  'a hung Redis with kit work in flight: closeRedis(timeoutMs %i) takes at most about twice timeoutMs, and resolves with the client ended',
  async (timeoutMs) => {
    const client = redis.client({ commandTimeout: 10_000 });
    const pid = redis.server.pid!;
    // Ended, as close-long-timeout.test.ts requires: not resolved with the client still open.
    expect(await closeFrozen(client, (signal) => process.kill(pid, signal), timeoutMs, true)).toEqual({
      status: 'end',
      took: 'about twice',
    });
  },
  15_000,
);
