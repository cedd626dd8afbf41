import type { Request, RequestHandler, Response } from 'express';
import { rateLimit } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';

const redis = useRedisServer();

/** One decision, straight through the middleware (no HTTP: a round trip to Redis is all it costs). */
function decide(mw: RequestHandler): Promise<'allowed' | 'denied'> {
  return new Promise((resolve, reject) => {
    const req = { headers: {}, ip: '203.0.113.9' } as unknown as Request;
    const res = { setHeader() {}, getHeader() {}, deny: () => resolve('denied') } as unknown as Response;
    mw(req, res, (error?: unknown) => (error ? reject(error) : resolve('allowed')));
  });
}

describe('the deny cache and Redis time', () => {
  // Redis counts in whole ms (its now is rounded down), so the wait it reports may be up to 1 ms
  // longer than the truth; a denial remembered that long would turn away a request Redis allows.
  it('never answers from memory once Redis allows again, however the window ends within a ms', async () => {
    const common = {
      redis: redis.plain(),
      name: 'edge',
      algorithm: 'fixed-window' as const,
      limit: 1,
      window: 50,
      coalesce: false,
      timeout: 5000,
      failMode: 'closed' as const,
      key: () => 'k',
      handler: (_req: Request, res: Response) => (res as unknown as { deny: () => void }).deny(),
    };
    const cached = rateLimit(common);
    // The same counter, asked without memory: Redis's own answer.
    const truth = rateLimit({ ...common, denyCache: false });
    await truth.get('warm-up');
    const events = captureEvents('rate-limit');
    const fromMemoryAfterAllowed: number[] = [];
    try {
      for (let window = 0; window < 20; window++) {
        // Fill the window and get a denial remembered; then ask Redis until it allows again, and
        // the cached limiter right after: it must not still be denying from memory.
        while ((await decide(cached)) === 'allowed');
        while ((await decide(truth)) === 'denied');
        const hits = events.count('deny-cache-hit');
        await decide(cached);
        if (events.count('deny-cache-hit') > hits) fromMemoryAfterAllowed.push(window);
      }
    } finally {
      events.stop();
    }
    expect(fromMemoryAfterAllowed).toEqual([]);
  });
});
