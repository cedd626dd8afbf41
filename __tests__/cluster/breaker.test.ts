import calculateSlot from 'cluster-key-slot';
import express from 'express';
import Redis, { Cluster } from 'ioredis';
import request from 'supertest';
import { breakerFor, configureBreaker } from '../../lib/breaker';
import { idempotency } from '../../lib/idempotency';
import { recordKey } from '../../lib/idempotency/request-key';
import { DEFAULT_PREFIX } from '../../lib/keys';
import { rateLimit } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';
import { eventually, useRedisCluster } from '../helpers/redis';

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

/** Holds every client command on one master for `ms` (the cluster bus keeps running: no failover). */
async function pause(node: { host: string; port: number }, ms: number) {
  const admin = new Redis({ ...node, lazyConnect: true });
  await admin.connect();
  const until = Date.now() + ms;
  await admin.call('CLIENT', 'PAUSE', String(ms), 'ALL');
  return {
    until,
    /** Even CLIENT UNPAUSE waits for the pause to end: outlast it before closing. */
    async over() {
      await new Promise((r) => setTimeout(r, Math.max(0, until - Date.now())));
      admin.disconnect();
    },
  };
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
    const paused = await pause(stalled, 2500);
    try {
      // Separate keys, so coalescing cannot fold them into one call: three timeouts open the breaker.
      for (const name of on.slice(0, 3)) expect((await hit(name)).status).toBe(503);
      // Each counts once it still has no reply past the client's commandTimeout.
      await eventually(
        () => breakerFor(client, `{${on[0]}}`).currentState === 'open',
        'the breaker open',
        1500,
      );
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
      await paused.over();
    }
  });

  it('rateLimit warns once per stalled master and reports recovery only when that master answers again', async () => {
    const client = redis.client();
    await client.ping();
    configureBreaker(client, { failureThreshold: 3, cooldownMs: 100 });
    const stalled = redis.cluster.nodes[1]!;
    const node = `${stalled.host}:${stalled.port}`;
    const { on, off } = clientsBy(client, node);
    const warnings: string[] = [];
    const limiter = rateLimit({
      redis: client,
      limit: 100,
      window: '1h',
      algorithm: 'fixed-window',
      timeout: 300,
      logger: { warn: (m: string) => warnings.push(m) },
      key: (req) => String(req.headers['x-client']),
    });
    const app = express().get('/', limiter, (_req, res) => {
      res.json({ ok: true });
    });
    const counted = async (name: string) =>
      (await request(app).get('/').set('x-client', name)).headers.ratelimit !== undefined;
    const events = captureEvents('rate-limit');
    const paused = await pause(stalled, 2500);
    try {
      // Requests alternate between the stalled master (failing open) and healthy ones (counted):
      // each healthy answer must not end the stalled master's outage.
      for (let i = 0; i < 3; i++) {
        expect(await counted(on[i]!)).toBe(false);
        expect(await counted(off[0]!)).toBe(true);
      }
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain(`Redis node ${node} unavailable`);
      expect(events.count('fail-open')).toBe(3);
      expect(events.count('recovered')).toBe(0);

      await paused.over();
      let back = false;
      for (const deadline = Date.now() + 5000; !back && Date.now() < deadline; ) back = await counted(on[0]!);
      expect(back).toBe(true);
      expect(events.events.filter((e) => e.type === 'recovered')).toEqual([
        expect.objectContaining({ node }),
      ]);
      expect(warnings).toHaveLength(1);
    } finally {
      events.stop();
      await paused.over();
    }
  });

  it("idempotency failMode 'open' warns once per stalled master, not again after each healthy answer", async () => {
    const client = redis.client();
    await client.ping();
    configureBreaker(client, { failureThreshold: 3, cooldownMs: 100 });
    const stalled = redis.cluster.nodes[2]!;
    const node = `${stalled.host}:${stalled.port}`;
    const app = express().post(
      '/orders',
      idempotency({ redis: client, timeout: 300, failMode: 'open', scope: () => 'x' }),
      (_req, res) => {
        res.status(201).json({ ok: true });
      },
    );
    // Each record has its own hash tag: sort idempotency keys by the master their record lands on.
    const nodeOfKey = (k: string) =>
      client.slots[calculateSlot(recordKey(DEFAULT_PREFIX, 's:x', 'POST', '/orders', k))]?.[0];
    const keys = Array.from({ length: 200 }, (_, i) => `order-${i}`);
    const on = keys.filter((k) => nodeOfKey(k) === node);
    const off = keys.filter((k) => nodeOfKey(k) !== node);
    const post = (key: string) => request(app).post('/orders').set('idempotency-key', key).send({ n: 1 });
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const paused = await pause(stalled, 2500);
    try {
      for (let i = 0; i < 3; i++) {
        expect((await post(on[i]!)).status).toBe(201);
        expect((await post(off[i]!)).status).toBe(201);
      }
      const failOpen = warn.mock.calls.filter(
        ([, o]) => (o as { code?: string })?.code === 'ERK_IDEMPOTENCY_FAIL_OPEN',
      );
      expect(failOpen).toHaveLength(1);
      expect(String(failOpen[0]![0])).toContain(`Redis node ${node} unavailable`);
    } finally {
      warn.mockRestore();
      await paused.over();
    }
  });

  it("picks the breaker by the slot of the key as sent, with the client's keyPrefix in front", async () => {
    // A prefix with its own hash tag sends every key to the prefix's slot, whatever the key's tag.
    const prefixed = redis.track(new Cluster(redis.cluster.nodes, { keyPrefix: '{p}:' }));
    await prefixed.ping();
    const prefixNode = prefixed.slots[calculateSlot('{p}')]![0]!;
    const { off } = clientsBy(prefixed, prefixNode);
    const key = `{${off[0]}}`;
    expect(breakerFor(prefixed, key).node).toBe(prefixNode);
    const plain = redis.client();
    await plain.ping();
    expect(breakerFor(plain, key).node).toBe(plain.slots[calculateSlot(key)]![0]);
    expect(breakerFor(plain, key).node).not.toBe(prefixNode);
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
