import calculateSlot from 'cluster-key-slot';
import express from 'express';
import Redis, { type Cluster } from 'ioredis';
import request from 'supertest';
import { breakerFor, configureBreaker } from '../../lib/breaker';
import { rateLimit } from '../../lib/rate-limit';
import { useRedisCluster } from '../helpers/redis';

/** Client keys whose rate-limit keys (`{<client>}` hash tag) live on `node`, and ones that do not. */
function clientsBy(client: Cluster, node: string) {
  const on: string[] = [];
  const off: string[] = [];
  for (let i = 0; on.length < 4 || off.length < 1; i++) {
    const name = `c${i}`;
    (client.slots[calculateSlot(`{${name}}`)]?.[0] === node ? on : off).push(name);
  }
  return { on, off };
}

describe('circuit breakers on a real Redis Cluster', () => {
  const redis = useRedisCluster();

  it('one stalled master opens only its own breaker: keys on the other masters keep being served', async () => {
    const client = redis.client();
    await client.ping();
    configureBreaker(client, { failureThreshold: 3, cooldownMs: 10_000 });
    const stalled = redis.cluster.nodes[0]!;
    const node = `${stalled.host}:${stalled.port}`;
    const { on, off } = clientsBy(client, node);
    const limiter = rateLimit({
      redis: client,
      limit: 100,
      window: '1h',
      algorithm: 'fixed-window',
      failMode: 'closed',
      timeout: 200,
      logger: { warn() {} },
      key: (req) => String(req.headers['x-client']),
    });
    const app = express().get('/', limiter, (_req, res) => {
      res.json({ ok: true });
    });
    const hit = (name: string) => request(app).get('/').set('x-client', name);

    expect((await hit(off[0]!)).status).toBe(200);
    const admin = new Redis({ ...stalled, lazyConnect: true });
    await admin.connect();
    const pausedUntil = Date.now() + 2500;
    try {
      // Holds every client command on that master; the cluster bus keeps running, so no failover.
      await admin.call('CLIENT', 'PAUSE', '2500', 'ALL');
      // Separate keys, so coalescing cannot fold them into one call: three timeouts open the breaker.
      for (const name of on.slice(0, 3)) expect((await hit(name)).status).toBe(503);
      expect(breakerFor(client, `{${on[0]}}`).currentState).toBe('open');
      const started = Date.now();
      const fast = await hit(on[3]!);
      expect(fast.status).toBe(503);
      // Refused by the open breaker, not after another 200 ms timeout.
      expect(Date.now() - started).toBeLessThan(150);

      const healthy = await hit(off[0]!);
      expect(healthy.status).toBe(200);
      expect(healthy.headers.ratelimit).toMatch(/r=98;/);
      expect(breakerFor(client, `{${off[0]}}`).currentState).toBe('closed');
    } finally {
      // Even CLIENT UNPAUSE waits for the pause to end: outlast it before closing.
      await new Promise((r) => setTimeout(r, Math.max(0, pausedUntil - Date.now())));
      admin.disconnect();
    }
  });

  it('keeps one client-wide breaker for calls without a key', async () => {
    const client = redis.client();
    await client.ping();
    const [a, b] = redis.cluster.nodes;
    const keyOn = (n: { host: string; port: number }) => clientsBy(client, `${n.host}:${n.port}`).on[0]!;
    expect(breakerFor(client)).toBe(breakerFor(client));
    expect(breakerFor(client, `{${keyOn(a!)}}`)).not.toBe(breakerFor(client));
    expect(breakerFor(client, `{${keyOn(a!)}}`)).not.toBe(breakerFor(client, `{${keyOn(b!)}}`));
    expect(breakerFor(client, `{${keyOn(a!)}}`)).toBe(breakerFor(client, `x:{${keyOn(a!)}}:y`));
  });
});
