import express from 'express';
import type { Redis } from 'ioredis';
import { type RateLimitOptions, rateLimit } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { useTcpProxy } from '../helpers/tcp-proxy';
import { hit, listen, sleep } from './fixtures/http';

// Refunds over a network that loses replies or stalls: ioredis sends a command again when its reply
// was lost, and a command it gave up on can still reach Redis later. A refund must give back once,
// and only when the limiter reports it given back.

const redis = useRedisServer();
const proxy = useTcpProxy(() => redis.server.port);
const stops: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** Whether a chunk the client sent is a rate-limit refund call (mode 'r' as its own argument). */
const isRefund = (chunk: string) => chunk.includes('\r\n$1\r\nr\r\n');

async function server(client: Redis, options: Omit<RateLimitOptions, 'redis'>, beforeFail = async () => {}) {
  const limiter = rateLimit({ ...options, redis: client, key: () => 'k' });
  const app = express();
  app.use(limiter);
  app.get('/ok', (_req, res) => {
    res.send('ok');
  });
  app.get('/fail', async (_req, res) => {
    await beforeFail();
    res.status(500).send('failed');
  });
  const http = await listen(app);
  stops.push(http.close);
  return { limiter, url: http.url };
}

describe('rateLimit refunds over a lossy network', () => {
  for (const algorithm of ['fixed-window', 'token-bucket', 'gcra', 'sliding-window'] as const) {
    it(`${algorithm}: a refund whose reply was lost, and that ioredis sent again, gives back once`, async () => {
      let armed = false;
      let dropped = 0;
      const client = await proxy({
        dropAfter: (chunk) => {
          if (!armed || dropped > 0 || !isRefund(chunk)) return false;
          dropped++;
          return true;
        },
      });
      const events = captureEvents('rate-limit');
      stops.push(events.stop);
      const { url } = await server(client, {
        name: `lost-${algorithm}`,
        algorithm,
        limit: 3,
        window: '1h',
        skipFailedRequests: true,
        timeout: 3000,
      });
      expect((await hit(url, '/ok', 'a')).status).toBe(200);
      expect((await hit(url, '/ok', 'a')).status).toBe(200);
      armed = true;
      expect((await hit(url, '/fail', 'a')).status).toBe(500);
      await events.waitFor('refund', 1);
      expect(dropped).toBe(1);
      // Two successes hold two of three units: exactly one more passes.
      expect((await hit(url, '/ok', 'a')).status).toBe(200);
      expect((await hit(url, '/ok', 'a')).status).toBe(429);
    });
  }

  it('a refund that reaches Redis only after the limiter gave up on it (Redis paused) gives nothing back', async () => {
    const pauser = redis.plain();
    const events = captureEvents('rate-limit');
    stops.push(events.stop);
    const { limiter, url } = await server(
      redis.plain(),
      {
        name: 'late-refund',
        algorithm: 'fixed-window',
        limit: 5,
        window: '1h',
        skipFailedRequests: true,
        timeout: 200,
      },
      // The request was counted; Redis stalls while its failed answer goes out, so its refund is
      // held past the limiter's timeout and then runs.
      async () => {
        await pauser.call('CLIENT', 'PAUSE', '700', 'ALL');
      },
    );
    expect((await hit(url, '/ok', 'a')).status).toBe(200);
    expect((await hit(url, '/fail', 'a')).status).toBe(500);
    await events.waitFor('refund-failed', 1);
    await sleep(900);
    expect(events.count('refund')).toBe(0);
    // Reported as not given back, and indeed not: both requests still hold their unit.
    expect((await limiter.get('k')).remaining).toBe(3);
  });

  it('a refund is not refused because the event loop was busy while its count came back', async () => {
    const events = captureEvents('rate-limit');
    stops.push(events.stop);
    const busy = (ms: number) => {
      const until = Date.now() + ms;
      while (Date.now() < until);
    };
    const limiter = rateLimit({
      redis: redis.plain(),
      name: 'lagging',
      limit: 5,
      window: '1h',
      skipFailedRequests: true,
      key: () => 'k',
    });
    const app = express();
    // The loop stalls for longer than the limiter's timeout (250 ms) while the count is in flight.
    app.use((_req, _res, next) => {
      setTimeout(() => busy(300), 1);
      next();
    });
    app.use(limiter);
    app.get('/fail', (_req, res) => {
      res.status(500).send('failed');
    });
    const http = await listen(app);
    stops.push(http.close);
    // Connected, script loaded: the stall is all that delays the counts below.
    await limiter.get('warm-up');
    for (let i = 0; i < 3; i++) expect((await hit(http.url, '/fail', 'a')).status).toBe(500);
    await events.waitFor('refund', 3);
    expect(events.count('refund-failed')).toBe(0);
    expect((await limiter.get('k')).remaining).toBe(5);
  });
});

describe('rateLimit decisions over a lossy network', () => {
  /** Whether a chunk the client sent is a rate-limit decision call (mode 'c' as its own argument). */
  const isDecision = (chunk: string) => chunk.includes('\r\n$1\r\nc\r\n');

  /**
   * A client whose connection drops right after Redis answered its first decision once `armed`:
   * ioredis sends that decision again, and Redis runs it twice.
   */
  async function dropFirstDecision() {
    const state = { armed: false, dropped: 0, client: undefined as unknown as Redis };
    state.client = await proxy({
      dropAfter: (chunk) => {
        if (!state.armed || state.dropped > 0 || !isDecision(chunk)) return false;
        state.dropped++;
        return true;
      },
    });
    return state;
  }

  it('sliding-window: a decision Redis ran twice (its reply lost, ioredis sent it again) counts once, and leaves the window with its entry', async () => {
    const drop = await dropFirstDecision();
    const { limiter, url } = await server(drop.client, {
      name: 'twice',
      algorithm: 'sliding-window',
      limit: 2,
      window: 1000,
      timeout: 3000,
      failMode: 'closed',
    });
    await limiter.get('warm-up');
    drop.armed = true;
    const started = performance.now();
    expect((await hit(url, '/ok', 'a')).status).toBe(200);
    expect(drop.dropped).toBe(1);
    // Run twice, it is one entry: the window's total must say one unit, as the entry does.
    const key = 'erk:rl:twice:{k}:s2:2:1000';
    const plain = redis.plain();
    const entries = (await plain.zrange(key, '0', '-1')).filter((m) => m !== '#').length;
    expect({ entries, total: -Number(await plain.zscore(key, '#')) }).toEqual({ entries: 1, total: 1 });
    // One more while it is in the window (keeps the key alive), then two once it has left: the
    // window then holds the second request only, and the third fits beside it.
    await sleep(600 - (performance.now() - started));
    expect((await hit(url, '/ok', 'a')).status).toBe(200);
    await sleep(1150 - (performance.now() - started));
    expect((await hit(url, '/ok', 'a')).status).toBe(200);
  });

  it('sliding-window: the request taking the last unit, run twice, is answered allowed (it is counted)', async () => {
    const drop = await dropFirstDecision();
    const { limiter, url } = await server(drop.client, {
      name: 'last',
      algorithm: 'sliding-window',
      limit: 2,
      window: '1h',
      timeout: 3000,
      failMode: 'closed',
    });
    await limiter.get('warm-up');
    expect((await hit(url, '/ok', 'a')).status).toBe(200);
    drop.armed = true;
    const second = await hit(url, '/ok', 'a');
    const logged = (await redis.plain().zrange('erk:rl:last:{k}:s2:2:3600000', '0', '-1')).filter(
      (m) => m !== '#',
    ).length;
    expect({ dropped: drop.dropped, logged, second: second.status }).toEqual({
      dropped: 1,
      logged: 2,
      second: 200,
    });
    // Both units are used: the next one is denied.
    expect((await hit(url, '/ok', 'a')).status).toBe(429);
  });
});
