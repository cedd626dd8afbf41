import express from 'express';
import request from 'supertest';
import { closeRedis } from '../../lib/connection';
import { rateLimit } from '../../lib/rate-limit';
import { sleep } from '../cache/helpers';
import { useRedisCluster } from '../helpers/redis';

const cluster = useRedisCluster();

function freeze(signal: 'SIGSTOP' | 'SIGCONT') {
  for (const s of cluster.cluster.servers) process.kill(s.pid!, signal);
}

// shutdown/close-bound.test.ts on a Cluster: closeRedis keeps to about twice timeoutMs and resolves
// with the client ended, though a Cluster's disconnect() empties its node list before the sockets close.
describe('closeRedis on a frozen Cluster', () => {
  it('timeoutMs 200, nothing in flight: resolves with the client ended', async () => {
    const timeoutMs = 200;
    const client = cluster.client({ commandTimeout: 10_000 });
    await client.ping();
    freeze('SIGSTOP');
    try {
      const started = performance.now();
      await closeRedis(client, { timeoutMs });
      const took = Math.round(performance.now() - started);
      expect({ status: client.status, took: took < 2 * timeoutMs + 200 }).toEqual({
        status: 'end',
        took: true,
      });
    } finally {
      freeze('SIGCONT');
    }
  }, 15_000);

  it('timeoutMs 1000, kit work in flight: resolves with the client ended', async () => {
    const timeoutMs = 1000;
    const client = cluster.client({ commandTimeout: 10_000 });
    await client.ping();
    const app = express();
    app.get('/', rateLimit({ redis: client, limit: 5, window: '1m', timeout: 10_000 }), (_req, res) =>
      res.send('ok'),
    );
    freeze('SIGSTOP');
    try {
      const pending = request(app)
        .get('/')
        .then(
          () => undefined,
          () => undefined,
        );
      await sleep(50);
      const started = performance.now();
      await closeRedis(client, { timeoutMs });
      const took = Math.round(performance.now() - started);
      void pending;
      expect({ status: client.status, took: took < 2 * timeoutMs + 200 }).toEqual({
        status: 'end',
        took: true,
      });
    } finally {
      freeze('SIGCONT');
    }
  }, 15_000);
});
