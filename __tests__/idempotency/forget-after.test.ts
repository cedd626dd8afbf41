import express from 'express';
import { onKitEvent } from '../../lib/events';
import { idempotency } from '../../lib/idempotency';
import * as record from '../../lib/idempotency/record';
import { useRedisServer } from '../helpers/redis';
import { dropScriptReply, useTcpProxy } from '../helpers/tcp-proxy';
import { listen } from '../rate-limit/fixtures/http';
import { orderServer } from './http';

// forget() leaves a new mark on the record for ttl, and no request reserved before it takes a
// vanished record back: not a completion that ioredis sends again (its reply lost) after the
// forget(), nor a holder whose lease lapsed and whom a retry overtook, nor one still running past
// ttl. A request that uses the key afresh takes its record back as usual.

const redis = useRedisServer();
const proxy = useTcpProxy(() => redis.server.port);
const stops: Array<() => void | Promise<void>> = [];

/** Reserves `key` for `owner` (fingerprint 'fp'); → the reservation, with the mark it saw. */
async function reserved(client: ReturnType<typeof redis.client>, key: string, owner: string, lockMs: number) {
  const found = await record.reserve(client, key, 'fp', owner, lockMs);
  if (found.state !== 'reserved') throw new Error(`not reserved: ${found.state}`);
  return found;
}
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

it('a second run of COMPLETE (ioredis resend) after forget() of the done record does not store it again', async () => {
  const client = redis.client();
  const key = 'erk:idem:{review16}';
  const response = { status: 201, headers: [] as Array<[string, string]>, body: Buffer.from('{"order":1}') };
  const { forgotten: seen } = await reserved(client, key, 'owner-1', 30_000);
  expect(await record.complete(client, key, 'owner-1', 'fp', response, 60_000, seen)).toBe('held');
  expect(await record.forget(client, key, 60_000)).toBe(true);
  // The same EVALSHA again, as ioredis resends it when the first reply was lost.
  const again = await record.complete(client, key, 'owner-1', 'fp', response, 60_000, seen);
  expect({ again, exists: await client.exists(key) }).toEqual({ again: 'lost', exists: 0 });
});

it('forget() that lands while the completion reply is lost; the retry runs afresh', async () => {
  // The first script call after arming is the reservation, the second the completion.
  const { state, dropAfter } = dropScriptReply(2);
  let forgotten = false;
  let forgetNow: () => Promise<void> = async () => {};
  const viaProxy = await proxy({
    // Holds the resent COMPLETE (the third script call after arming) until forget() has run.
    before: (chunk) => {
      if (!state.armed || state.dropped === 0 || forgotten) return undefined;
      if (!/\r\neval(sha)?\r\n/i.test(chunk.toString('latin1'))) return undefined;
      forgotten = true;
      return forgetNow();
    },
    dropAfter,
  });
  const events: string[] = [];
  stops.push(
    onKitEvent((e) => {
      if (e.component === 'idempotency') events.push(e.type);
    }),
  );
  const { post } = await orderServer(viaProxy, stops, { scope: () => 'u' });
  // The admin side: same options, its own (direct) client.
  const admin = idempotency({ redis: redis.client(), timeout: 2000, scope: () => 'u' });
  let forgot: boolean | undefined;
  forgetNow = async () => {
    forgot = await admin.forget({ key: 'k-forget', route: '/orders', scope: 'u' });
  };
  expect((await post('warm')).status).toBe(201);
  state.armed = true;
  events.length = 0;
  expect((await post('k-forget')).status).toBe(201);
  expect({ dropped: state.dropped, forgot }).toEqual({ dropped: 1, forgot: true });
  // forget() resolved true: the key is to be used afresh, and the handler runs again.
  const retry = await post('k-forget');
  expect({
    status: retry.status,
    replayed: retry.headers.get('idempotent-replayed'),
    body: await retry.json(),
    events,
  }).toEqual({
    status: 201,
    replayed: null,
    body: { order: 3 },
    events: expect.not.arrayContaining(['lease-restored']),
  });
});

it("a holder whose lease lapsed (superseded by a retry) cannot take the record back after forget() of the retry's answer", async () => {
  const client = redis.client();
  const key = 'erk:idem:{review16b}';
  const answer = (n: number) => ({
    status: 201,
    headers: [] as Array<[string, string]>,
    body: Buffer.from(`{"order":${n}}`),
  });
  // O1 reserves; its heartbeats stop (a timeout guard answered) and its lease lapses.
  const first = await reserved(client, key, 'owner-1', 150);
  await new Promise((r) => setTimeout(r, 250));
  // The retry O2 runs and stores; the operator then forgets the key.
  const second = await reserved(client, key, 'owner-2', 30_000);
  expect(await record.complete(client, key, 'owner-2', 'fp', answer(2), 60_000, second.forgotten)).toBe(
    'held',
  );
  expect(await record.forget(client, key, 60_000)).toBe(true);
  // O1's late answer comes: it must not be stored under the forgotten key.
  const late = await record.complete(client, key, 'owner-1', 'fp', answer(1), 60_000, first.forgotten);
  expect({ late, exists: await client.exists(key) }).toEqual({ late: 'lost', exists: 0 });
});

// The key used afresh after forget() is an ordinary record: one that vanishes (a failover to a
// replica without it, an eviction) is taken back by its holder as usual.
it('a request reserved after forget() whose record vanishes takes it back; its retry replays', async () => {
  const client = redis.client();
  const admin = redis.plain();
  await admin.flushall();
  const events: string[] = [];
  stops.push(
    onKitEvent((e) => {
      if (e.component === 'idempotency') events.push(e.type);
    }),
  );
  let runs = 0;
  let gate: (() => void) | undefined;
  let entered: (() => void) | undefined;
  const app = express();
  const mw = idempotency({ redis: client, timeout: 500, scope: () => 'u' });
  app.post('/orders', mw, async (_req, res) => {
    runs++;
    const n = runs;
    if (n === 2) {
      entered?.();
      await new Promise<void>((r) => {
        gate = r;
      });
    }
    res.status(201).json({ order: n });
  });
  const http = await listen(app);
  stops.push(http.close);
  const post = (key: string) =>
    fetch(`${http.url}/orders`, { method: 'POST', headers: { 'Idempotency-Key': key } });

  // First use of the key, then the operator forgets it (so it "can be used afresh").
  expect((await post('k1')).status).toBe(201);
  expect(await mw.forget({ key: 'k1', route: '/orders', scope: 'u' })).toBe(true);

  // The key used afresh: the handler is running when its record is lost (failover/eviction).
  const inHandler = new Promise<void>((r) => {
    entered = r;
  });
  const second = post('k1');
  await inHandler;
  const keys = (await admin.keys('*idem:*')).filter((k) => k.endsWith('}'));
  expect(keys).toHaveLength(1);
  await admin.del(keys[0]!);
  events.length = 0;
  gate!();
  const answer = await second;
  expect({ status: answer.status, body: await answer.json() }).toEqual({ status: 201, body: { order: 2 } });
  await new Promise((r) => setTimeout(r, 100));

  // The client retries (it did not see the answer): the stored answer should replay.
  const retry = await post('k1');
  expect({
    status: retry.status,
    replayed: retry.headers.get('idempotent-replayed'),
    body: await retry.json(),
    runs,
    restored: events.includes('lease-restored'),
    lost: events.includes('lease-lost'),
  }).toEqual({ status: 201, replayed: 'true', body: { order: 2 }, runs: 2, restored: true, lost: false });
});

it('a holder reserved after one forget() and before a second one cannot take the record back (no clocks compared)', async () => {
  const client = redis.client();
  const key = 'erk:idem:{twice-forgotten}';
  const answer = { status: 201, headers: [] as Array<[string, string]>, body: Buffer.from('{"order":2}') };
  const first = await reserved(client, key, 'owner-1', 30_000);
  expect(await record.complete(client, key, 'owner-1', 'fp', answer, 60_000, first.forgotten)).toBe('held');
  expect(await record.forget(client, key, 60_000)).toBe(true);
  // The key used afresh; its holder's lease lapses (a timeout guard answered), then a second forget().
  const second = await reserved(client, key, 'owner-2', 150);
  await new Promise((r) => setTimeout(r, 250));
  const third = await reserved(client, key, 'owner-3', 30_000);
  expect(await record.forget(client, key, 60_000)).toBe(true);
  await client.del(key);
  expect(await record.complete(client, key, 'owner-2', 'fp', answer, 60_000, second.forgotten)).toBe('lost');
  expect(await record.heartbeat(client, key, 'owner-3', 'fp', 30_000, third.forgotten)).toBe('lost');
  expect(await client.exists(key)).toBe(0);
});

// The mark lasts ttl: one that expired says no forget() since a reservation (a holder lives at
// most ttl), and a later forget() writes a mark no reservation saw before.
const answerOf = (n: number) => ({
  status: 201,
  headers: [] as Array<[string, string]>,
  body: Buffer.from(`{"order":${n}}`),
});
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('a resent COMPLETE after a second forget(), after the first mark expired, does not store the forgotten answer', async () => {
  const client = redis.client();
  const key = 'erk:idem:{rev19-restart}';
  const ttl = 1000; // the smallest ttl the options allow
  const first = await reserved(client, key, 'owner-1', 30_000);
  expect(await record.complete(client, key, 'owner-1', 'fp', answerOf(1), ttl, first.forgotten)).toBe('held');
  expect(await record.forget(client, key, ttl)).toBe(true);
  // The key used afresh just before the mark expires: this holder saw that forget's mark.
  const second = await reserved(client, key, 'owner-2', 30_000);
  expect(await record.complete(client, key, 'owner-2', 'fp', answerOf(2), 60_000, second.forgotten)).toBe(
    'held',
  );
  await wait(ttl + 200); // the mark expires (the done record lives on: its ttl is 60 s here)
  // The operator forgets owner-2's answer: a new mark.
  expect(await record.forget(client, key, ttl)).toBe(true);
  // ioredis resends owner-2's COMPLETE (its reply was lost): it must not bring the answer back.
  const again = await record.complete(client, key, 'owner-2', 'fp', answerOf(2), 60_000, second.forgotten);
  expect({ again, exists: await client.exists(key) }).toEqual({ again: 'lost', exists: 0 });
});

it('a holder whose lease lapsed does not take back after a later forget(), after the first mark expired', async () => {
  const client = redis.client();
  const key = 'erk:idem:{rev19-restart-hb}';
  const ttl = 1000;
  const first = await reserved(client, key, 'owner-1', 30_000);
  expect(await record.complete(client, key, 'owner-1', 'fp', answerOf(1), ttl, first.forgotten)).toBe('held');
  expect(await record.forget(client, key, ttl)).toBe(true);
  // owner-2 reserves; its heartbeats stop (a timeout guard answered), and its lease lapses.
  const second = await reserved(client, key, 'owner-2', 150);
  await wait(ttl + 200);
  // A retry owner-3 runs and stores; the operator forgets that answer.
  const third = await reserved(client, key, 'owner-3', 30_000);
  expect(await record.complete(client, key, 'owner-3', 'fp', answerOf(3), 60_000, third.forgotten)).toBe(
    'held',
  );
  expect(await record.forget(client, key, ttl)).toBe(true);
  // owner-2's late answer must not be stored under the forgotten key.
  const late = await record.complete(client, key, 'owner-2', 'fp', answerOf(2), 60_000, second.forgotten);
  expect({ late, exists: await client.exists(key) }).toEqual({ late: 'lost', exists: 0 });
});

it('a holder reserved after forget() takes its vanished record back once the mark has expired (no forget since)', async () => {
  const client = redis.client();
  const key = 'erk:idem:{rev19-expired}';
  const ttl = 1000;
  const first = await reserved(client, key, 'owner-1', 30_000);
  expect(await record.complete(client, key, 'owner-1', 'fp', answerOf(1), ttl, first.forgotten)).toBe('held');
  expect(await record.forget(client, key, ttl)).toBe(true);
  // The key used afresh (a legitimate request), seeing the mark; its lease lapses while nobody
  // else comes (a Redis blip failed its heartbeats), and meanwhile the mark expires.
  const second = await reserved(client, key, 'owner-2', 300);
  await wait(ttl + 200);
  expect(await client.exists(key, `${key}:forgotten`)).toBe(0);
  // No forget() since its reservation, nobody else holds the key: it should take it back.
  expect(await record.heartbeat(client, key, 'owner-2', 'fp', 300, second.forgotten)).toBe('taken-back');
});

// A handler may run longer than ttl, so the mark (ttl) may be gone by the time it answers: past ttl
// it takes nothing back.
it('a handler slower than ttl, forgotten after its heartbeats stopped, does not store the forgotten answer', async () => {
  const events: string[] = [];
  stops.push(
    onKitEvent((e) => {
      if (e.component === 'idempotency') events.push(e.type);
    }),
  );
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let runs = 0;
  const opts = { redis: redis.client(), ttl: 1000, lockTtl: 300, timeout: 75, scope: () => 'u' };
  const app = express();
  app.post('/orders', idempotency(opts), async (_req, res) => {
    const n = ++runs;
    await gate;
    res.status(201).json({ order: n });
  });
  const http = await listen(app);
  stops.push(http.close);
  const post = () =>
    fetch(`${http.url}/orders`, { method: 'POST', headers: { 'Idempotency-Key': 'k-slow' } });
  const admin = idempotency({ ...opts, redis: redis.client() });

  const first = post();
  await wait(1100); // past the heartbeat cap (ttl): no heartbeat follows
  expect(await admin.forget({ key: 'k-slow', route: '/orders', scope: 'u' })).toBe(true);
  await wait(1300); // the tombstone (rest of the lease) and the mark (ttl) both expire
  release();
  expect((await first).status).toBe(201);
  await wait(200);
  // Not stored: forget() discarded it.
  const beforeRetry = events.filter((e) => e === 'lease-restored' || e === 'stored');
  // A retry runs the handler afresh.
  const retry = await post();
  const body = await retry.json();
  expect({ events: beforeRetry, runs, body }).toEqual({
    events: [],
    runs: 2,
    body: { order: 2 },
  });
}, 15_000);
