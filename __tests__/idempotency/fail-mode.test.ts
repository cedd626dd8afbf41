import type { Response } from 'express';
import { configureBreaker } from '../../lib/breaker';
import type { RedisClient } from '../../lib/client';
import type { CreateRedisOptions } from '../../lib/connection';
import { idempotency } from '../../lib/idempotency';
import { eventually, useRedisServer } from '../helpers/redis';
import { freshKey, orderApp, send, useEvents, useServers } from './http';

const redisServer = useRedisServer();
const servers = useServers();
const events = useEvents();

const made: RedisClient[] = [];
const client = (options?: CreateRedisOptions & { failFast?: false }) => {
  const c = redisServer.client(options);
  made.push(c);
  return c;
};
const plain = () => {
  const c = redisServer.plain();
  made.push(c);
  return c;
};

const TIMEOUT = 300;
// Generous: the assertion is "answers, well before a hang", not a latency target.
const WITHIN = TIMEOUT + 2000;

/** Waits until every client of this file is back, so clean-up can QUIT instead of cutting a half-open socket. */
async function reconnected(): Promise<void> {
  for (const client of made) {
    await eventually(
      async () => (await client.ping().catch(() => '')) === 'PONG',
      'a client to reconnect',
      10_000,
    );
  }
}

function counting() {
  const state = { runs: 0 };
  const handler = (_req: unknown, res: Response) => {
    state.runs += 1;
    res.status(201).json({ run: state.runs });
  };
  return { state, handler };
}

describe('idempotency when Redis is sick', () => {
  it.each([
    ["the middleware's timeout", { commandTimeout: 10_000 }, TIMEOUT],
    // createRedis's default 500 ms commandTimeout rejects first, as a plain ioredis error.
    ["createRedis's commandTimeout", {}, 800],
  ])(
    'answers 503 problem+json with Retry-After while Redis is paused (%s fires first), and cleans up after',
    async (_label, clientOptions, timeout) => {
      const redis = client(clientOptions);
      const admin = plain();
      const { state, handler } = counting();
      const url = `${await servers.listen(orderApp(idempotency({ redis, timeout }), handler))}/orders`;
      const key = freshKey('paused');
      await redis.ping();

      await admin.call('CLIENT', 'PAUSE', '3000', 'ALL');
      const started = Date.now();
      const answer = await send(url, { key });
      const elapsed = Date.now() - started;

      expect(answer.status).toBe(503);
      expect(answer.headers.get('retry-after')).toBe('1');
      expect(answer.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(answer.json()).toMatchObject({
        status: 503,
        type: expect.stringContaining('idempotency-unavailable'),
      });
      expect(elapsed).toBeLessThan(WITHIN);
      expect(state.runs).toBe(0);
      expect(events.types()).toContain('unavailable');

      // The reservation the timed-out script made once Redis woke up is dropped right behind it, so
      // the client's retry runs instead of meeting a 409 for a whole lease.
      await eventually(
        async () => (await admin.ping().catch(() => '')) === 'PONG',
        'the pause to end',
        10_000,
      );
      await eventually(async () => (await send(url, { key })).status === 201, 'the retry to run', 5000);
      expect(state.runs).toBe(1);
    },
  );

  it("failMode 'open' runs the handler unprotected when Redis is down, warns once and emits fail-open", async () => {
    const redis = client();
    configureBreaker(redis, { cooldownMs: 100 });
    const { state, handler } = counting();
    const url = `${await servers.listen(orderApp(idempotency({ redis, timeout: TIMEOUT, failMode: 'open' }), handler))}/orders`;
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      await redisServer.server.kill();
      const key = freshKey('open');
      const first = await send(url, { key });
      const second = await send(url, { key });
      expect(first.status).toBe(201);
      expect(second.status).toBe(201);
      expect(second.headers.get('idempotent-replayed')).toBeNull();
      expect(state.runs).toBe(2);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0]![0])).toMatch(/without idempotency protection/);
      expect(events.types().filter((t) => t === 'fail-open')).toHaveLength(2);
    } finally {
      warn.mockRestore();
      await redisServer.server.restart();
      await reconnected();
    }
  });

  it('answers 503 within the timeout when the server is killed (kit client and a plain new Redis(url))', async () => {
    const kit = client();
    const plainClient = plain();
    const { state, handler } = counting();
    const kitUrl = `${await servers.listen(orderApp(idempotency({ redis: kit, timeout: TIMEOUT }), handler))}/orders`;
    const plainUrl = `${await servers.listen(orderApp(idempotency({ redis: plainClient, timeout: TIMEOUT }), handler))}/orders`;
    await Promise.all([kit.ping(), plainClient.ping()]);

    await redisServer.server.kill();
    for (const url of [kitUrl, plainUrl, kitUrl, plainUrl]) {
      const started = Date.now();
      const answer = await send(url, { key: freshKey('killed') });
      expect(Date.now() - started).toBeLessThan(WITHIN);
      expect(answer.status).toBe(503);
      expect(answer.headers.get('retry-after')).toBe('1');
    }
    expect(state.runs).toBe(0);
    await redisServer.server.restart();
    await reconnected();
  });
});
