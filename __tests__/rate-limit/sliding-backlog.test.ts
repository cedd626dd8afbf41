import { MODE_CONSUME, MODE_PEEK } from '../../lib/rate-limit/script';
import { useRedisServer } from '../helpers/redis';
import { type ClockedRedis, setClock, withSimulatedClock } from './simulated-clock';

// A sliding-window key holds one log entry per request still in the window. When a large burst has
// left the window, its entries are cleared in steps of at most 1000 per step, so the next call does
// not block Redis for a walk over the whole burst. These tests run the script on a real redis-server
// with a simulated clock (as refund-model.test.ts does) and check that each call clears a bounded
// number of entries while every decision stays exact.

const CLEAR_STEP = 1000;
const WINDOW = 1000;
const T0 = 1_700_000_000_000;
const KEY = 'rl:{backlog}';

describe('rateLimit sliding-window after a large burst has left the window', () => {
  const server = useRedisServer();
  let redis: ClockedRedis;

  beforeAll(() => {
    redis = withSimulatedClock(server.plain());
  });

  beforeEach(() => redis.flushall());

  const at = (ms: number) => setClock(redis, ms);

  /** One script call deciding `costs.length` requests of one client; answers [allowed, remaining] per request. */
  async function consume(limit: number, costs: number[], tag: string) {
    const args: Array<string | number> = [MODE_CONSUME, 's', limit, WINDOW];
    for (const [i, cost] of costs.entries()) args.push(cost, `${tag}${i}`);
    const reply = await redis.rl(KEY, ...args);
    // One policy: [allowed, now, remaining, reset, retry-or-gap, three refund hints] per request.
    return costs.map((_, i) => ({ allowed: reply[i * 8] === 1, remaining: reply[i * 8 + 2]! }));
  }

  /** Decides one request of `cost`; answers whether it passed and, if not, when it could (ms). */
  async function attempt(limit: number, cost: number, tag: string) {
    const reply = await redis.rl(KEY, MODE_CONSUME, 's', limit, WINDOW, cost, tag);
    return { allowed: reply[0] === 1, retryMs: reply[4]! };
  }

  const peekRemaining = async (limit: number) =>
    (await redis.rl(KEY, MODE_PEEK, 's', limit, WINDOW, 0, '-'))[2]!;
  const entries = async () => (await redis.zcard(KEY)) - 1; // minus the "#" sum member
  const storedSum = async () => -Number(await redis.zscore(KEY, '#'));

  async function fill(limit: number, cost: number, count: number) {
    await at(T0);
    for (let done = 0; done < count; done += 500) {
      const replies = await consume(limit, Array(Math.min(500, count - done)).fill(cost), `b${done}-`);
      expect(replies.every((r) => r.allowed)).toBe(true);
    }
    expect((await consume(limit, [1], 'over'))[0]!.allowed).toBe(false);
  }

  it('clears at most 1000 expired entries per call, and unit-cost decisions stay exact meanwhile', async () => {
    const limit = 3000;
    await fill(limit, 1, 3000);
    expect(await entries()).toBe(3000);

    await at(T0 + WINDOW);
    expect(await peekRemaining(limit)).toBe(3000);
    expect(await entries()).toBe(3000); // a peek reads but never clears

    const [one] = await consume(limit, [1], 'a');
    expect(one).toEqual({ allowed: true, remaining: 2999 });
    expect(await entries()).toBe(3000 - CLEAR_STEP + 1);
    expect(await storedSum()).toBe(3000 - CLEAR_STEP + 1); // the backlog still counts in the stored sum

    // The whole quota minus that one request is free, although 2000 old entries are still stored.
    const rest = await consume(limit, Array(2999).fill(1), 'c');
    expect(rest.every((r) => r.allowed)).toBe(true);
    expect(rest.at(-1)!.remaining).toBe(0);
    expect(await entries()).toBe(3000 - 2 * CLEAR_STEP + 3000);

    const [over] = await consume(limit, [1], 'd');
    expect(over!.allowed).toBe(false);
    expect(await entries()).toBe(3000);
    expect(await storedSum()).toBe(3000);
  });

  it('clears further in the same call when costs above 1 leave the decision open, and never admits more than the limit', async () => {
    const limit = 3000;
    await fill(limit, 2, 1500); // 1500 entries of 2 units: the backlog bound (1 per entry) is too low
    await at(T0 + WINDOW);
    // get() reads one step too, and counts the 500 entries left as one unit each: the cautious side.
    expect(await peekRemaining(limit)).toBe(2500);
    expect(await entries()).toBe(1500);

    const [big] = await consume(limit, [3000], 'big');
    expect(big).toEqual({ allowed: true, remaining: 0 });
    expect(await entries()).toBe(1);
    expect((await consume(limit, [1], 'x'))[0]!.allowed).toBe(false);
  });

  it('a call whose request fits anyway leaves the rest of a weighted backlog for later calls', async () => {
    const limit = 3000;
    await fill(limit, 2, 1500);
    await at(T0 + WINDOW);
    const [small] = await consume(limit, [2], 's');
    expect(small!.allowed).toBe(true);
    expect(await entries()).toBe(1500 - CLEAR_STEP + 1);
    // Counting the 500 old entries as one unit each is the cautious side: fewer units reported left.
    expect(small!.remaining).toBeLessThanOrEqual(2998);
    const [next] = await consume(limit, [2], 't');
    expect(next).toEqual({ allowed: true, remaining: 2996 });
    expect(await entries()).toBe(2);
  });

  it('a denial while old entries remain says when the live entries free enough, not a whole window', async () => {
    const limit = 10_000;
    await fill(limit, 2, 5000); // 5000 entries of 2 units at T0: more than one call clears
    await at(T0 + WINDOW + 1);
    expect((await attempt(limit, 1, 'a')).allowed).toBe(true); // one live entry, at T0 + WINDOW + 1
    await at(T0 + WINDOW + 800);
    // 3000 old entries are still stored; the live one holds 1 unit, so all 10,000 are free once it
    // leaves the window, 201 ms from now.
    expect(await attempt(limit, limit, 'big')).toEqual({ allowed: false, retryMs: 201 });
  });

  it('measures the window in microseconds: a request 1 µs less than a window after the last is denied', async () => {
    // 0.999 ms into one millisecond, then 1.000 ms into the one a window later: 999.001 ms apart.
    await setClock(redis, T0, 999);
    expect(await attempt(1, 1, 'first')).toEqual({ allowed: true, retryMs: 0 });
    await setClock(redis, T0 + WINDOW, 0);
    const early = await attempt(1, 1, 'early');
    expect(early.allowed).toBe(false);
    expect(early.retryMs).toBe(1); // rounded up: never says sooner than the truth
    await setClock(redis, T0 + WINDOW, 998);
    expect((await attempt(1, 1, 'second')).allowed).toBe(false);
    // A whole window after the first: it has left the window.
    await setClock(redis, T0 + WINDOW, 999);
    expect((await attempt(1, 1, 'third')).allowed).toBe(true);
  });
});
