import express from 'express';
import { idempotency } from '../../lib/idempotency';
import { forgetWarnings } from '../../lib/logger';
import { useRedisServer } from '../helpers/redis';
import { freshKey, send, sleep, useEvents, useServers } from './http';

const redisServer = useRedisServer();
const servers = useServers();
const events = useEvents();

describe('idempotency() reached twice by one request', () => {
  // A second copy of the kit in one process (its CJS and ESM builds, lib/version.ts).
  let other!: typeof import('../../lib/idempotency');
  jest.isolateModules(() => {
    other = require('../../lib/idempotency');
  });

  it.each(['the same instance', 'two instances with the same options', 'two copies of the kit'])(
    '%s (on the app and on the route): the handler runs once and its answer is replayed, with one warning',
    async (how) => {
      forgetWarnings('ERK_IDEMPOTENCY_TWICE');
      const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
      const redis = redisServer.client();
      const appWide = idempotency({ redis });
      const onRoute =
        how === 'the same instance'
          ? appWide
          : (how === 'two copies of the kit' ? other.idempotency : idempotency)({ redis });
      const app = express();
      app.use(express.json());
      app.use(appWide);
      let runs = 0;
      app.post('/orders', onRoute, (_req, res) => {
        runs += 1;
        res.status(201).json({ order: runs });
      });
      const url = `${await servers.listen(app)}/orders`;
      const key = freshKey();
      const first = await send(url, { key, body: { item: 1 } });
      const retry = await send(url, { key, body: { item: 1 } });
      const warned = warn.mock.calls.filter(
        ([, o]) => (o as { code?: string })?.code === 'ERK_IDEMPOTENCY_TWICE',
      );
      warn.mockRestore();
      expect({
        first: first.status,
        retry: retry.status,
        replayed: retry.headers.get('idempotent-replayed'),
        body: retry.json(),
        runs,
        warned: warned.length,
      }).toEqual({ first: 201, retry: 201, replayed: 'true', body: { order: 1 }, runs: 1, warned: 1 });
      expect(events.types()).toContain('reached-twice');
    },
  );

  it("never stores another instance's 409 (its own key in flight): the outer key is released, and the retry gets the real answer", async () => {
    const redis = redisServer.client();
    // The outer key space is per user, the inner one per tenant: two users of one tenant with the
    // same key meet only in the inner one.
    const outer = idempotency({ redis, prefix: 'outer:', scope: (req) => String(req.headers['x-user']) });
    const inner = idempotency({ redis, prefix: 'inner:', scope: () => 'tenant-1' });
    const app = express();
    app.use(express.json());
    let runs = 0;
    app.post('/orders', outer, inner, async (_req, res) => {
      runs += 1;
      await sleep(300);
      res.status(201).json({ order: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey();
    const slow = send(url, { key, body: { item: 1 }, headers: { 'x-user': 'ann' } });
    await sleep(100);
    const during = await send(url, { key, body: { item: 1 }, headers: { 'x-user': 'bob' } });
    expect((await slow).status).toBe(201);
    const after = await send(url, { key, body: { item: 1 }, headers: { 'x-user': 'bob' } });
    expect({ during: during.status, after: after.status, body: after.json(), runs }).toEqual({
      during: 409,
      after: 201,
      body: { order: 1 },
      runs: 1,
    });
    expect(events.events).toContainEqual(
      expect.objectContaining({ type: 'released', reason: 'in-progress' }),
    );
  });
});
