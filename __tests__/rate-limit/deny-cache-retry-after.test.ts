import type { NextFunction, Request, Response } from 'express';
import { type Algorithm, rateLimit } from '../../lib/rate-limit';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { callLimiter } from './fixtures/direct';

const redis = useRedisServer();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/** Another client's slow command: Redis answers nobody for ARGV[1] ms (a busy script, a big DEL…). */
const STALL = `local t = redis.call('TIME') local s = t[1] * 1e6 + t[2]
repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s >= tonumber(ARGV[1]) * 1000 return 1`;

/** Answers a callLimiter call with the Retry-After (seconds) the client was told. */
const tellRetryAfter = (req: Request, _res: Response, _next: NextFunction, info: { retryAfter: number }) =>
  (req as unknown as { answer: (v: unknown) => void }).answer({ retryAfter: info.retryAfter });

// The deny cache answers repeat requests from memory, with the wait of the denial it remembers. A
// client that waits exactly that long must be let in, also when Redis was slow to answer the call
// that brought the denial: Redis decided later than the call was sent, so a wait counted from the
// send is too short to tell (it is right for how long to deny).
describe.each<Algorithm>(['fixed-window', 'sliding-window', 'token-bucket', 'gcra'])(
  'a Retry-After the deny cache answers (%s)',
  (algorithm) => {
    it('is never shorter than the wait Redis imposes, however slowly Redis decided', async () => {
      const limiter = rateLimit({
        redis: redis.plain(),
        name: `retry-${algorithm}`,
        algorithm,
        limit: 1,
        window: 3000,
        key: () => 'client',
        handler: tellRetryAfter,
        timeout: 5000,
      });
      const other = redis.plain();
      await limiter.get('warm');
      if (algorithm === 'fixed-window') {
        // Start right after a window boundary, so the whole 3 s lie ahead.
        const [s, us] = await other.time();
        await sleep(3000 - ((Number(s) * 1000 + Number(us) / 1000) % 3000) + 5);
      }
      const events = captureEvents('rate-limit');
      try {
        expect(await callLimiter(limiter)).toBe('allowed');
        // Redis is busy for 300 ms with another client's script as the next call is sent.
        const stall = other.eval(STALL, 0, 300);
        await sleep(5);
        expect(await callLimiter(limiter)).toEqual({ retryAfter: expect.any(Number) });
        await stall;
        const told: number[] = [];
        for (;;) {
          const hits = events.count('deny-cache-hit');
          const answer = (await callLimiter(limiter)) as { retryAfter: number };
          const at = performance.now();
          if (events.count('deny-cache-hit') === hits) break; // the memory is over: Redis answered
          told.push(at + answer.retryAfter * 1000);
          await sleep(50);
        }
        expect(told.length).toBeGreaterThan(10);
        // Each of these clients was told to come back then; the earliest must be let in.
        await sleep(Math.min(...told) - performance.now());
        expect(await callLimiter(limiter)).toBe('allowed');
      } finally {
        events.stop();
      }
    }, 15_000);
  },
);
