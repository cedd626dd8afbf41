import express from 'express';
import type { Redis } from 'ioredis';
import { onKitEvent } from '../../lib/events';
import { idempotency } from '../../lib/idempotency';
import { useRedisServer } from '../helpers/redis';
import { dropScriptReply, useTcpProxy } from '../helpers/tcp-proxy';
import { listen } from '../rate-limit/fixtures/http';
import { orderServer } from './http';

// ioredis sends a command again when the connection dropped before its reply: a reservation that
// had landed then finds its own owner token, and is still this request's.

const redis = useRedisServer();
const proxy = useTcpProxy(() => redis.server.port);
const stops: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

it('a reservation whose reply was lost runs the handler, instead of answering 409 to its own copy', async () => {
  const { state, dropAfter } = dropScriptReply();
  const client = await proxy({ dropAfter });
  const { post, runs } = await orderServer(client, stops);
  expect((await post('warm')).status).toBe(201); // loads the scripts, so the reserve is one EVALSHA
  state.armed = true;
  const first = await post('k1');
  expect(state.dropped).toBe(1);
  expect(first.status).toBe(201);
  const retry = await post('k1');
  expect([retry.status, retry.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
  expect(runs()).toBe(2);
});

it('a completion whose reply was lost reports the answer stored, not a lost lease, and the retry replays it', async () => {
  // The first script call after arming is the reservation, the second the completion.
  const { state, dropAfter } = dropScriptReply(2);
  const client = await proxy({ dropAfter });
  const events: string[] = [];
  stops.push(
    onKitEvent((e) => {
      if (e.component === 'idempotency') events.push(e.type);
    }),
  );
  const { post, runs } = await orderServer(client, stops);
  expect((await post('warm-2')).status).toBe(201);
  events.length = 0;
  state.armed = true;
  const first = await post('k2');
  expect(state.dropped).toBe(1);
  expect(first.status).toBe(201);
  expect(events).toContain('stored');
  expect(events).not.toContain('lease-lost');
  const retry = await post('k2');
  expect([retry.status, retry.headers.get('idempotent-replayed'), await retry.json()]).toEqual([
    201,
    'true',
    { order: 2 },
  ]);
  expect(runs()).toBe(2);
});

it('a reservation whose reply was lost and not sent again (maxRetriesPerRequest: 0) leaves the key free for the retry, not 409 for a lease', async () => {
  const { state, dropAfter } = dropScriptReply();
  const viaProxy = await proxy({ dropAfter });
  const { port } = viaProxy.options as { port: number };
  // The kit's own client through the same link: ioredis rejects the command instead of sending it
  // again (with the default 1 too, when the first reconnect also fails).
  const client = redis.client({ url: `redis://127.0.0.1:${port}`, maxRetriesPerRequest: 0 }) as Redis;
  try {
    const { post, runs } = await orderServer(client, stops);
    expect((await post('warm-3')).status).toBe(201);
    state.armed = true;
    const first = await post('k3');
    expect(state.dropped).toBe(1);
    expect(first.status).toBe(503);
    const statuses: number[] = [];
    const deadline = Date.now() + 3000;
    for (;;) {
      const retry = await post('k3');
      statuses.push(retry.status);
      if (retry.status === 201 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(statuses.at(-1)).toBe(201);
    expect(statuses).not.toContain(409);
    expect(runs()).toBe(2);
  } finally {
    // Before the proxy closes: it waits for its connections.
    client.disconnect();
  }
});

it('a Redis slower than lockTtl / 4 gets the fail mode, never a second run while the first still runs', async () => {
  // Replies take 450 ms: a lease of 600 ms renewed over such a link could lapse between renewals.
  const slow = await proxy({ delayMs: 450 });
  await slow.ping();
  let runs = 0;
  const app = express();
  const lockTtl = 600;
  app.post('/orders', idempotency({ redis: slow, lockTtl }), async (_req, res) => {
    runs++;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    res.status(201).json({ order: runs });
  });
  const other = express();
  other.post('/orders', idempotency({ redis: redis.client(), lockTtl }), async (_req, res) => {
    runs++;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    res.status(201).json({ order: runs });
  });
  const [a, b] = await Promise.all([listen(app), listen(other)]);
  stops.push(a.close, b.close);
  const post = (url: string) =>
    fetch(`${url}/orders`, { method: 'POST', headers: { 'Idempotency-Key': 'slow-link' } });
  const first = post(a.url);
  const retries: Array<Promise<Response>> = [];
  for (let t = 0; t < 1300; t += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    retries.push(post(b.url));
  }
  await Promise.all([first, ...retries]);
  expect(runs).toBe(1);
});

it.each(['done', 'in flight'] as const)(
  'forget() of a %s record whose reply was lost (ioredis sent it again) still answers true',
  async (state) => {
    const { state: drop, dropAfter } = dropScriptReply();
    const client = await proxy({ dropAfter });
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const mw = idempotency({ redis: client, timeout: 2000, scope: () => 'u1' });
    const key = state === 'done' ? 'k-done' : 'k-in-flight';
    let runs = 0;
    const app = express();
    app.post('/orders', mw, async (_req, res) => {
      runs++;
      if (state === 'in flight') await held;
      res.status(201).json({ order: runs });
    });
    const http = await listen(app);
    stops.push(http.close);
    const post = () => fetch(`${http.url}/orders`, { method: 'POST', headers: { 'Idempotency-Key': key } });
    await mw.forget({ key: 'warm-up', route: '/orders', scope: 'u1' }); // loads the script
    const first = post();
    if (state === 'done') await first;
    else while (runs === 0) await new Promise((r) => setTimeout(r, 5));
    drop.armed = true;
    const forgotten = await mw.forget({ key: key, route: '/orders', scope: 'u1' });
    release();
    await first;
    expect({ dropped: drop.dropped, forgotten }).toEqual({ dropped: 1, forgotten: true });
    // Forgotten: the next request with the key runs the handler again.
    const again = await post();
    expect([again.status, again.headers.get('idempotent-replayed')]).toEqual([201, null]);
    expect(runs).toBe(2);
  },
);

it('forget() removes a done record while Redis is out of memory (noeviction)', async () => {
  const admin = redis.plain();
  await admin.flushall();
  const mw = idempotency({ redis: redis.client(), timeout: 2000, scope: () => 'u1' });
  const app = express();
  app.post('/orders', mw, (_req, res) => {
    res.status(201).json({ ok: true });
  });
  const http = await listen(app);
  stops.push(http.close);
  await fetch(`${http.url}/orders`, { method: 'POST', headers: { 'Idempotency-Key': 'k1' } });
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', '1');
  try {
    expect(await mw.forget({ key: 'k1', route: '/orders', scope: 'u1' })).toBe(true);
  } finally {
    await admin.config('SET', 'maxmemory', '0');
  }
  // No record: only the call's own marker (a minute) and the record's forgotten mark (ttl) are left.
  const left = await admin.keys('erk:idem:*');
  expect(left.filter((k) => !k.includes(':forget:'))).toEqual([expect.stringMatching(/:forgotten$/)]);
});
