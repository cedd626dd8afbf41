import calculateSlot from 'cluster-key-slot';
import express from 'express';
import request from 'supertest';
import { rateLimit } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';
import { eventually, useRedisCluster } from '../helpers/redis';

const TIMEOUT_MS = 250;

describe('a master fails over on a real Redis Cluster (3 masters, 1 replica each)', () => {
  const redis = useRedisCluster({ replicasPerMaster: 1 });

  it('answers every request within the timeout while its master is down, then counts again on the promoted replica', async () => {
    const client = redis.client();
    await client.ping();
    const limiter = rateLimit({
      redis: client,
      limit: 1000,
      window: '1h',
      algorithm: 'fixed-window',
      timeout: TIMEOUT_MS,
      logger: { warn() {} },
      key: () => 'alice',
    });
    const app = express().get('/', limiter, (_req, res) => {
      res.json({ ok: true });
    });
    const remaining = (res: request.Response) => /r=(\d+);/.exec(res.headers.ratelimit ?? '')?.[1];

    expect(remaining(await request(app).get('/'))).toBe('999');
    const slot = calculateSlot('{alice}');
    const owner = client.slots[slot]![0]!;
    const master = redis.cluster.servers.find((s) => `${s.host}:${s.port}` === owner)!;
    const events = captureEvents('rate-limit');
    await master.kill();

    // Fail open while the slot has no master: every request passes, none waits much past the timeout.
    const outage: number[] = [];
    const deadline = Date.now() + 30_000;
    let recovered: request.Response | undefined;
    while (!recovered && Date.now() < deadline) {
      const started = Date.now();
      const res = await request(app).get('/');
      const took = Date.now() - started;
      expect(res.status).toBe(200);
      expect(took).toBeLessThan(TIMEOUT_MS + 750);
      if (res.headers.ratelimit) recovered = res;
      else outage.push(took);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(outage.length).toBeGreaterThan(0);
    expect(recovered).toBeDefined();
    // The dead master never answers again: its outage ends because its slot moved to the replica.
    expect(events.events.filter((e) => e.type === 'recovered').map((e) => e.node)).toContain(owner);
    events.stop();

    // A replica now serves the slot, and the script (loaded there by ioredis on NOSCRIPT) counts exactly.
    const promoted = client.slots[slot]![0];
    expect(promoted).not.toBe(owner);
    // Decisions that timed out during the outage may still land (ioredis retries them): wait until
    // the count holds still for half a second.
    const used = async () => (await limiter.get('alice')).policies[0]!.used;
    await eventually(
      async () => (await used()) === (await new Promise((r) => setTimeout(r, 500)).then(used)),
      'late retries to land',
      10_000,
    );
    const before = Number(remaining(await request(app).get('/')));
    for (let i = 1; i <= 3; i++) expect(Number(remaining(await request(app).get('/')))).toBe(before - i);
    const state = await limiter.get('alice');
    expect(state.policies[0]!.remaining).toBe(before - 3);
  }, 60_000);
});
