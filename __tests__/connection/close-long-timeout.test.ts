import { closeRedis } from '../../lib/connection';
import { MAX_TIMER_MS } from '../../lib/duration';
import { useRedisServer } from '../helpers/redis';

// closeRedis waits at most twice its timeoutMs for the client's end: a timer Node fires after 1 ms
// when longer than 2^31-1 ms, which let it resolve before the hard disconnect, the client still open.

const server = useRedisServer();

describe('closeRedis with the longest timeoutMs it accepts', () => {
  it.each([2 ** 30 + 1, MAX_TIMER_MS])(
    'timeoutMs %d on a frozen Redis: it does not resolve while the client is still open',
    async (timeoutMs) => {
      const client = server.client({ commandTimeout: 60_000 });
      await client.ping();
      const pid = server.server.pid!;
      process.kill(pid, 'SIGSTOP');
      try {
        let settled = false;
        void closeRedis(client, { timeoutMs }).then(() => {
          settled = true;
        });
        await new Promise((r) => setTimeout(r, 300));
        expect({ settled, status: client.status }).toEqual({ settled: false, status: 'ready' });
      } finally {
        process.kill(pid, 'SIGCONT');
        client.disconnect();
      }
    },
  );
});

describe('closeRedis on a frozen Redis, its timers run to the end (a fake clock)', () => {
  it.each([2 ** 30 + 1, MAX_TIMER_MS - 1, MAX_TIMER_MS])(
    'timeoutMs %d: the hard disconnect comes before closeRedis resolves',
    async (timeoutMs) => {
      const client = server.client({ commandTimeout: MAX_TIMER_MS });
      await client.ping();
      const pid = server.server.pid!;
      process.kill(pid, 'SIGSTOP');
      jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
      try {
        let settled = false;
        let disconnectedBeforeResolve = false;
        const disconnect = jest.spyOn(client, 'disconnect');
        void closeRedis(client, { timeoutMs }).then(() => {
          settled = true;
          disconnectedBeforeResolve = disconnect.mock.calls.length > 0;
        });
        // It first lets a few turns pass (waiting for the kit's work, flushing the auto-pipeline):
        // its timers are set after them.
        for (let turns = 0; turns < 20 && jest.getTimerCount() < 2; turns++) {
          await new Promise((resolve) => setImmediate(resolve));
        }
        expect(jest.getTimerCount()).toBeGreaterThanOrEqual(2);
        await jest.advanceTimersByTimeAsync(MAX_TIMER_MS + 10);
        expect({ settled, disconnectedBeforeResolve }).toEqual({
          settled: true,
          disconnectedBeforeResolve: true,
        });
      } finally {
        jest.useRealTimers();
        process.kill(pid, 'SIGCONT');
        client.disconnect();
      }
    },
  );
});
