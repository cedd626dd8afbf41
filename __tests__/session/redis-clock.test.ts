import type { RedisClient } from '../../lib/client';
import { RedisClock } from '../../lib/redis-clock';

// The session save's deadline comes from Redis time samples (see store.ts). Pure arithmetic: the
// real-Redis behaviour is in failure.test.ts.
const standalone = { options: {} } as unknown as RedisClient;
const OFFSET = 1_000_000; // Redis's clock, ahead of performance.now() by this much

describe('RedisClock', () => {
  it('keeps the best sample over one read late (a busy event loop)', () => {
    const clock = new RedisClock(standalone);
    clock.note('k', performance.now() + OFFSET);
    clock.note('k', performance.now() + OFFSET - 400);
    const deadline = clock.deadline('k', 300)!;
    // Taking the late sample would put it 400 ms early; the margin is for a busy machine between
    // these lines (a 3 ms one failed under a parallel test run).
    expect(deadline).toBeGreaterThanOrEqual(Math.floor(performance.now() + OFFSET + 300) - 100);
  });

  it("follows Redis's clock when it goes back, so the deadline is not later than the give-up", () => {
    const clock = new RedisClock(standalone);
    clock.note('k', performance.now() + OFFSET);
    const stepped = OFFSET - 2000;
    clock.note('k', performance.now() + stepped);
    const giveUp = performance.now() + stepped + 300;
    expect(clock.deadline('k', 300)!).toBeLessThanOrEqual(giveUp);
  });
});
