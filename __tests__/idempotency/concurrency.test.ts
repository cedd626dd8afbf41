import { idempotency } from '../../lib/idempotency';
import { eventually, useRedisServer } from '../helpers/redis';
import { freshKey, orderApp, send, sleep, useEvents, useServers } from './http';

const redisServer = useRedisServer();
const servers = useServers();
const events = useEvents();

describe('idempotency under concurrency', () => {
  it('100 concurrent identical requests across two app instances run the handler exactly once', async () => {
    let runs = 0;
    const handler = async (_req: unknown, res: import('express').Response) => {
      runs += 1;
      await sleep(300);
      res.status(201).json({ order: 'o-1', run: runs });
    };
    // Two instances, each with its own client, as two processes behind a load balancer would be.
    // A generous timeout: this checks exactly-once, not latency, and CI machines can be busy.
    const a = `${await servers.listen(orderApp(idempotency({ redis: redisServer.client({ commandTimeout: 5000 }), timeout: 5000 }), handler))}/orders`;
    const b = `${await servers.listen(orderApp(idempotency({ redis: redisServer.plain(), timeout: 5000 }), handler))}/orders`;
    const key = freshKey('burst');
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, i) => send(i % 2 ? a : b, { key, body: { item: 'book' } })),
    );

    expect(runs).toBe(1);
    const originals = answers.filter(
      (r) => r.status === 201 && r.headers.get('idempotent-replayed') === null,
    );
    const replays = answers.filter(
      (r) => r.status === 201 && r.headers.get('idempotent-replayed') === 'true',
    );
    const conflicts = answers.filter((r) => r.status === 409);
    expect(originals.length).toBe(1);
    expect(replays.length + conflicts.length).toBe(99);
    for (const c of conflicts) {
      expect(c.headers.get('retry-after')).toBe('1');
      expect(c.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
    for (const r of replays) expect(r.body.equals(originals[0]!.body)).toBe(true);
    // Afterwards every retry is a replay.
    const late = await send(a, { key, body: { item: 'book' } });
    expect(late.headers.get('idempotent-replayed')).toBe('true');
    expect(late.body.equals(originals[0]!.body)).toBe(true);
  });

  it('a slow handler keeps its lease by heartbeat and is never run twice', async () => {
    let runs = 0;
    const handler = async (_req: unknown, res: import('express').Response) => {
      runs += 1;
      await sleep(2500);
      res.status(201).json({ run: runs });
    };
    // The handler outlives the lease four times over; only the heartbeat keeps it reserved.
    const options = { lockTtl: 600 } as const;
    const a = `${await servers.listen(orderApp(idempotency({ redis: redisServer.client(), ...options }), handler))}/orders`;
    const b = `${await servers.listen(orderApp(idempotency({ redis: redisServer.client(), ...options }), handler))}/orders`;
    const key = freshKey('slow');
    const first = send(a, { key });
    const retries = [];
    for (let i = 0; i < 4; i++) {
      await sleep(500);
      retries.push(await send(b, { key }));
    }
    const original = await first;
    expect(original.status).toBe(201);
    expect(retries.map((r) => r.status)).toEqual([409, 409, 409, 409]);
    expect(runs).toBe(1);
    const replay = await send(b, { key });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body.equals(original.body)).toBe(true);
  });

  it('after a worker crashes mid-request, its lease expires after lockTtl and a retry proceeds', async () => {
    const crashedClient = redisServer.client();
    let resume: () => void = () => {};
    const hung = new Promise<void>((resolve) => {
      resume = resolve;
    });
    let runsA = 0;
    let runsB = 0;
    const a = `${await servers.listen(
      orderApp(idempotency({ redis: crashedClient, lockTtl: 500 }), async (_req, res) => {
        runsA += 1;
        await hung;
        res.status(201).json({ worker: 'a' });
      }),
    )}/orders`;
    const b = `${await servers.listen(
      orderApp(idempotency({ redis: redisServer.client(), lockTtl: 500 }), (_req, res) => {
        runsB += 1;
        res.status(201).json({ worker: 'b' });
      }),
    )}/orders`;
    const key = freshKey('crash');
    const abandoned = send(a, { key }).catch(() => undefined);
    await eventually(() => runsA === 1, 'worker a to start the handler');
    // The "crash": worker a can no longer talk to Redis, so its heartbeat stops.
    crashedClient.disconnect();

    expect((await send(b, { key })).status).toBe(409);
    let retry = await send(b, { key });
    const deadline = Date.now() + 10_000;
    while (retry.status === 409 && Date.now() < deadline) {
      await sleep(100);
      retry = await send(b, { key });
    }
    expect(retry.status).toBe(201);
    expect(retry.json()).toEqual({ worker: 'b' });
    expect(runsB).toBe(1);

    resume();
    await abandoned;
    // The crashed worker could not store its late answer; b's answer is the one replayed.
    const replay = await send(b, { key });
    expect(replay.json()).toEqual({ worker: 'b' });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(events.types()).toContain('store-failed');
  });
});
