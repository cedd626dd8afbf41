import { ALGORITHM_CODE, MODE_CONSUME, MODE_PEEK } from '../../lib/rate-limit/script';
import { prng } from '../helpers/prng';
import { useRedisServer } from '../helpers/redis';
import { type ClockedRedis, refund as refundCall, setClock, withSimulatedClock } from './simulated-clock';

// Token-bucket and gcra refunds are computed from a few numbers per key and per request, not from
// the history, so they are checked here against an exact model of that history: the state of the
// requests that were counted and not refunded. The script runs unchanged on a real redis-server,
// except that its clock is simulated (read from two keys instead of TIME), so time can stand still
// or jump without a test taking minutes.

interface Counted {
  us: number;
  ms: number;
  cost: number;
  hints: number[];
  refunded: boolean;
}

/** What an exact limiter holds for the requests still counted: units left (floored). */
function exactRemaining(
  algorithm: 'token-bucket' | 'gcra',
  limit: number,
  windowMs: number,
  counted: Counted[],
  nowUs: number,
) {
  const held = counted.filter((c) => !c.refunded);
  if (algorithm === 'gcra') {
    const T = Math.max(1, Math.floor((windowMs * 1000) / limit + 0.5));
    let tat = Number.NEGATIVE_INFINITY;
    for (const c of held) tat = Math.max(tat, c.us) + c.cost * T;
    return Math.floor((T * limit - (Math.max(tat, nowUs) - nowUs)) / T);
  }
  const cap = limit * windowMs;
  let tokens = cap;
  let at: number | undefined;
  for (const c of held) {
    if (at !== undefined) tokens = Math.min(cap, tokens + (c.ms - at) * limit);
    tokens -= c.cost * windowMs;
    at = c.ms;
  }
  if (at !== undefined) tokens = Math.min(cap, tokens + (Math.floor(nowUs / 1000) - at) * limit);
  return Math.floor(tokens / windowMs);
}

describe('rateLimit refunds against an exact model (simulated clock)', () => {
  const server = useRedisServer();
  let redis: ClockedRedis;

  beforeAll(() => {
    redis = withSimulatedClock(server.plain());
  });

  it('a request counted in a key that was emptied and created again within the same ms gives nothing back (gcra)', async () => {
    await redis.flushall();
    const limit = 10_000; // 100 us per unit over 1 s
    const ms = 1_700_000_000_123;
    const at = (us: number, plusMs = 0) => setClock(redis, ms + plusMs, us);
    const call = (...args: Array<string | number>) => redis.rl('rl:{gen}', ...args);
    const take = async (cost: number) => {
      const reply = await call(MODE_CONSUME, 'g', limit, 1000, cost, `m${cost}`);
      expect(reply[0]).toBe(1);
      return { cost, origin: reply[1]!, hints: reply.slice(4, 8) };
    };
    const refund = (c: { cost: number; origin: number; hints: number[] }) =>
      refundCall(redis, 'rl:{gen}', ['g', limit, 1000], [c.cost, `m${c.cost}`, c.origin, ...c.hints]);
    // h holds 500 ms of (simulated) time, so the key outlives w's refund in real time as well.
    await at(100);
    const h = await take(5000);
    await at(101);
    const w = await take(4000);
    await at(102);
    await refund(w);
    await at(103);
    const x = await take(1);
    // h's refund leaves nothing held (x's 100 us have healed by now): the key is deleted...
    await at(400);
    await refund(h);
    expect(await redis.exists('rl:{gen}')).toBe(0);
    // ...and created again in the same ms by a request that takes 9000.
    await at(500);
    await take(9000);
    await at(0, 5);
    const before = (await call(MODE_PEEK, 'g', limit, 1000, 0, '-'))[2]!;
    await refund(x);
    expect((await call(MODE_PEEK, 'g', limit, 1000, 0, '-'))[2]).toBe(before);
  });

  it.each(['token-bucket', 'gcra'] as const)(
    'never give back more than the refunded requests still held, and give back everything once all are refunded (%s)',
    async (algorithm) => {
      const random = prng(algorithm === 'gcra' ? 7 : 11);
      const code = ALGORITHM_CODE[algorithm];
      let overGiven = 0;
      let notWhole = 0;
      let checks = 0;
      for (let run = 0; run < 120; run++) {
        await redis.flushall();
        const limit = 1 + Math.floor(random() * 12);
        const windowMs = 1000 * (1 + Math.floor(random() * 5));
        let ms = 1_700_000_000_000 + Math.floor(random() * 1e6);
        let us = 0;
        const nowUs = () => ms * 1000 + us;
        const counted: Counted[] = [];
        const call = (...args: Array<string | number>) => redis.rl('rl:{c}', ...args);
        // Several refunds in one call, as the limiter batches a client's refunds of one turn.
        const refund = (...cs: Counted[]) => {
          const args: Array<string | number> = [];
          for (const c of cs) {
            c.refunded = true;
            args.push(c.cost, 'm', c.ms, ...c.hints);
          }
          return refundCall(redis, 'rl:{c}', [code, limit, windowMs], args);
        };
        const remaining = async () => (await call(MODE_PEEK, code, limit, windowMs, 0, '-'))[2]!;
        for (let step = 0; step < 40; step++) {
          // Time often stands still (requests in the same ms), else moves up to two emission intervals.
          const advance = random() < 0.4 ? 0 : Math.floor(random() * random() * 2 * (windowMs / limit));
          us = advance ? Math.floor(random() * 1000) : us + Math.floor(random() * (1000 - us));
          ms += advance;
          await setClock(redis, ms, us);
          const held = counted.filter((c) => !c.refunded);
          if (random() < 0.55 || held.length === 0) {
            const cost = 1 + Math.floor(random() * Math.min(3, limit));
            const reply = await call(MODE_CONSUME, code, limit, windowMs, cost, `m${step}`);
            // One policy: [allowed, now, remaining, reset, gap, refunded, units, key stamp].
            if (reply[0] === 1)
              counted.push({ us: nowUs(), ms: reply[1]!, cost, hints: reply.slice(4, 8), refunded: false });
          } else {
            const pick = () => held.splice(Math.floor(random() * held.length), 1)[0]!;
            await (random() < 0.3 && held.length > 1 ? refund(pick(), pick()) : refund(pick()));
          }
          checks++;
          if ((await remaining()) > exactRemaining(algorithm, limit, windowMs, counted, nowUs())) overGiven++;
        }
        await refund(...counted.filter((x) => !x.refunded));
        if ((await remaining()) !== limit) notWhole++;
      }
      expect(checks).toBe(120 * 40);
      expect({ overGiven, notWhole }).toEqual({ overGiven: 0, notWhole: 0 });
    },
  );
});
