import express, { type ErrorRequestHandler } from 'express';
import type { RedisClient } from '../../lib/client';
import { type RateLimitOptions, rateLimit } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { listen } from './fixtures/http';

const ALGORITHMS = ['fixed-window', 'sliding-window', 'token-bucket', 'gcra'] as const;

/** Script calls Redis ran (a client's first call of a script goes as EVAL, which loads it). */
async function scriptCalls(redis: RedisClient): Promise<number> {
  const info = (await redis.info('commandstats')) as string;
  let calls = 0;
  for (const m of info.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)) calls += Number(m[1]);
  return calls;
}

/**
 * A key option that holds every request until the test opens the gate, so that a burst reaches the
 * limiter in one event-loop turn (in the order the requests arrived): what a busy server sees, made
 * deterministic.
 */
function gate() {
  let arrived = 0;
  const waiters: Array<{ n: number; resolve(): void }> = [];
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return {
    key: async (req: express.Request) => {
      arrived += 1;
      for (const w of waiters) if (arrived >= w.n) w.resolve();
      await opened;
      return String(req.headers['x-client']);
    },
    arrivals: (n: number) =>
      new Promise<void>((resolve) => {
        if (arrived >= n) resolve();
        else waiters.push({ n, resolve });
      }),
    open: () => open(),
  };
}

interface Sent {
  client: string;
  cost?: number;
  /** The status the route answers with (default 200). */
  status?: number;
}

/**
 * Sends the requests one after another into the gate (each has reached the limiter before the next
 * goes), opens it, and returns the answers in sending order.
 */
async function burst(options: Omit<RateLimitOptions, 'redis' | 'key'>, redis: RedisClient, sent: Sent[]) {
  const g = gate();
  const limiter = rateLimit({
    timeout: 5000,
    failMode: 'closed',
    cost: (req) => Number(req.headers['x-cost'] ?? 1),
    ...options,
    redis,
    key: g.key,
  });
  const app = express();
  app.get('/', limiter, (req, res) => {
    res.status(Number(req.headers['x-status'] ?? 200)).json(req.rateLimit);
  });
  app.use(((error, _req, res, _next) => {
    res.status(500).json({ error: (error as Error).message });
  }) as ErrorRequestHandler);
  const server = await listen(app);
  try {
    const answers: Array<Promise<{ status: number; body: Record<string, unknown> }>> = [];
    for (const [i, s] of sent.entries()) {
      answers.push(
        fetch(`${server.url}/`, {
          headers: {
            'x-client': s.client,
            'x-cost': String(s.cost ?? 1),
            'x-status': String(s.status ?? 200),
          },
        }).then(async (res) => ({ status: res.status, body: (await res.json()) as Record<string, unknown> })),
      );
      await g.arrivals(i + 1);
    }
    const before = await scriptCalls(redis);
    g.open();
    const results = await Promise.all(answers);
    return { results, scripts: (await scriptCalls(redis)) - before, limiter };
  } finally {
    await server.close();
  }
}

describe('rateLimit coalescing: one script call per client per event-loop turn', () => {
  const redis = useRedisServer();

  it.each(ALGORITHMS)(
    '%s: a burst of 10 in one turn is one script call, decided in arrival order with exactly the limit allowed',
    async (algorithm) => {
      const client = redis.plain();
      const { results, scripts } = await burst(
        { limit: 6, window: '1h', algorithm, name: `burst-${algorithm}` },
        client,
        Array.from({ length: 10 }, () => ({ client: 'c1' })),
      );
      expect(scripts).toBe(1);
      expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200, 429, 429, 429, 429]);
      expect(results.slice(0, 6).map((r) => r.body.remaining)).toEqual([5, 4, 3, 2, 1, 0]);
      if (algorithm === 'sliding-window') {
        // One log entry per allowed request (plus the running-sum member), none for the denied.
        const [key] = await client.keys('*burst-sliding-window*');
        expect(await client.zcard(key!)).toBe(7);
      }
    },
  );

  it('clients in the same turn get one call each and their own quota', async () => {
    const sent = ['a', 'b', 'a', 'b', 'a', 'b', 'a', 'b'].map((client) => ({ client }));
    const { results, scripts } = await burst(
      { limit: 3, window: '1h', name: 'two-clients' },
      redis.plain(),
      sent,
    );
    expect(scripts).toBe(2);
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200, 429, 429]);
  });

  it('with several policies and mixed costs, a denied request in the middle of a batch consumes from none', async () => {
    const { results, limiter } = await burst(
      {
        name: 'mixed',
        policies: [
          { limit: 5, window: '1h', name: 'small' },
          { limit: 100, window: '1h', name: 'big', algorithm: 'gcra' },
        ],
      },
      redis.plain(),
      [
        { client: 'm', cost: 3 },
        { client: 'm', cost: 3 },
        { client: 'm', cost: 2 },
      ],
    );
    expect(results.map((r) => r.status)).toEqual([200, 429, 200]);
    const state = await limiter.get('m');
    expect(state.policies.map((p) => [p.policy, p.used])).toEqual([
      ['small', 5],
      ['big', 5],
    ]);
  });

  it('splits a burst larger than one batch (64) into several calls, still exact across the split', async () => {
    const { results, scripts } = await burst(
      { limit: 65, window: '1h', name: 'big-burst', algorithm: 'gcra' },
      redis.plain(),
      Array.from({ length: 70 }, () => ({ client: 'big' })),
    );
    expect(scripts).toBe(2);
    expect(results.map((r) => r.status)).toEqual([...Array(65).fill(200), ...Array(5).fill(429)]);
    expect(results[64]!.body.remaining).toBe(0);
  });

  it.each(ALGORITHMS)(
    '%s: refunds of responses that finish in one turn go back in one call',
    async (algorithm) => {
      const client = redis.plain();
      const refunds = captureEvents('rate-limit');
      try {
        const before = await scriptCalls(client);
        const { results, limiter } = await burst(
          { limit: 6, window: '1h', algorithm, name: `refund-${algorithm}`, skipSuccessfulRequests: true },
          client,
          Array.from({ length: 8 }, () => ({ client: 'r' })),
        );
        expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200, 429, 429]);
        expect(await refunds.settled('refund', 6)).toBe(6);
        // One call decided the burst; one gave the six successes back.
        expect((await scriptCalls(client)) - before).toBe(2);
        expect((await limiter.get('r')).used).toBe(0);
      } finally {
        refunds.stop();
      }
    },
  );

  it('with several policies, a batch of refunds gives back to every policy', async () => {
    const refunds = captureEvents('rate-limit');
    try {
      const { results, limiter } = await burst(
        {
          name: 'refund-policies',
          skipSuccessfulRequests: true,
          policies: ALGORITHMS.map((algorithm) => ({ limit: 10, window: '1h', algorithm, name: algorithm })),
        },
        redis.plain(),
        [1, 2, 3].map((cost) => ({ client: 'rp', cost })),
      );
      expect(results.map((r) => r.status)).toEqual([200, 200, 200]);
      expect(await refunds.settled('refund', 3)).toBe(3);
      const state = await limiter.get('rp');
      expect(state.policies.map((p) => [p.policy, p.used])).toEqual(ALGORITHMS.map((a) => [a, 0]));
    } finally {
      refunds.stop();
    }
  });

  it('a batch of refunds gives back only the responses that qualify', async () => {
    const client = redis.plain();
    const refunds = captureEvents('rate-limit');
    try {
      const { results, limiter } = await burst(
        { limit: 10, window: '1h', name: 'refund-mixed', skipFailedRequests: true },
        client,
        [200, 500, 200, 503, 404, 200].map((status) => ({ client: 'rm', status })),
      );
      expect(results.map((r) => r.status)).toEqual([200, 500, 200, 503, 404, 200]);
      expect(await refunds.settled('refund', 3)).toBe(3);
      // 500, 503 and 404 are failures (statusCode >= 400) and come back; the three 200s stay counted.
      expect((await limiter.get('rm')).used).toBe(3);
    } finally {
      refunds.stop();
    }
  });

  it('coalesce: false sends one call per request', async () => {
    const { results, scripts } = await burst(
      { limit: 10, window: '1h', name: 'single', coalesce: false },
      redis.plain(),
      Array.from({ length: 5 }, () => ({ client: 's' })),
    );
    expect(scripts).toBe(5);
    expect(results.map((r) => r.body.remaining)).toEqual([9, 8, 7, 6, 5]);
  });

  it('a handler that throws fails only its own request; the rest of the batch is still answered', async () => {
    const { results } = await burst(
      {
        limit: 1,
        window: '1h',
        name: 'throws',
        denyCache: false,
        handler: () => {
          throw new Error('handler broke');
        },
      },
      redis.plain(),
      [{ client: 't' }, { client: 't' }, { client: 't' }],
    );
    expect(results.map((r) => r.status)).toEqual([200, 500, 500]);
    expect(results[1]!.body.error).toBe('handler broke');
  });
});
