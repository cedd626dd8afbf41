import { useRedisCluster } from '../helpers/redis';
import { closeFrozen } from '../shutdown/fixtures/frozen';

const cluster = useRedisCluster();

function freeze(signal: 'SIGSTOP' | 'SIGCONT') {
  for (const s of cluster.cluster.servers) process.kill(s.pid!, signal);
}

// shutdown/close-bound.test.ts on a Cluster: closeRedis keeps to about twice timeoutMs and resolves
// with the client ended, though a Cluster's disconnect() empties its node list before the sockets close.
describe('closeRedis on a frozen Cluster', () => {
  it.each([
    ['timeoutMs 200, nothing in flight', 200, false],
    ['timeoutMs 1000, kit work in flight', 1000, true],
  ] as const)(
    '%s: resolves with the client ended',
    async (_name, timeoutMs, callInFlight) => {
      const client = cluster.client({ commandTimeout: 10_000 });
      expect(await closeFrozen(client, freeze, timeoutMs, callInFlight)).toEqual({
        status: 'end',
        took: 'about twice',
      });
    },
    15_000,
  );
});
