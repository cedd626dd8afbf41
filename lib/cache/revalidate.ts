import type { Request } from 'express';
import { MAX_TIMER_MS } from '../duration';
import { withoutQuery } from '../mask-url';
import { beginWork } from '../pending-work';
import { newToken } from '../token';
import { type RefreshTicket, replay } from './refresh';
import { l1Put } from './vary';
import type { Cache } from './wrap';

/**
 * stale-while-revalidate for `cacheResponse`: one background refresh per key at a time (a flag here,
 * the fill lock across processes). When the stale copy came from L1, another instance may have
 * refreshed Redis already: that entry is taken instead of running the origin once more per instance.
 */
export function createRevalidator(cache: Cache, event: (type: string, key: string) => void) {
  const { l1 } = cache;
  const { lockTimeoutMs, logger } = cache.options;
  const refreshing = new Set<string>();

  async function run(req: Request, key: string, redisKey: string, fromL1: boolean, done: () => void) {
    if (fromL1) {
      const heard = cache.heard;
      const fresh = await cache.freshInRedis(redisKey, req.headers);
      if (fresh) {
        if (l1) l1Put(l1, key, fresh, req.headers, heard);
        event('refresh-from-redis', key);
        return done();
      }
    }
    const token = newToken();
    const since = await cache.tryLock(redisKey, token);
    if (since === undefined) return done();
    event('refresh', key);
    // Renewed from now, not from when the replay reaches the cache: a middleware in front of it
    // slower than lockTimeout (an auth call) would let it expire, and the refresh's store be refused.
    const stopHolding = cache.holdLock(redisKey, token);
    // A replay that never reached this cache (answered or ended before it) leaves the lock to us:
    // held until lockTimeout, it would hold off every instance's next refresh of the key.
    let over = false;
    const ticket: RefreshTicket = {
      token,
      since,
      redisKey,
      owner: refresh,
      claim: () => {
        if (over) return false;
        ticket.claimed = true;
        stopHolding();
        return true;
      },
      done: () => {
        if (over) return;
        over = true;
        stopHolding();
        if (!ticket.claimed) cache.releaseFill(redisKey, token);
        done();
      },
    };
    // Capped as every 3 × lockTimeout timer: Node fires a longer one after 1 ms.
    const started = replay(req, ticket, Math.min(3 * lockTimeoutMs, MAX_TIMER_MS), (error) =>
      logger.warn(
        { key: redisKey, path: withoutQuery(req.originalUrl), err: error },
        'background refresh failed; stale entry kept',
      ),
    );
    if (!started) ticket.done();
  }

  function refresh(req: Request, key: string, redisKey: string, fromL1 = false): void {
    if (refreshing.has(key)) return;
    refreshing.add(key);
    const safety = setTimeout(() => refreshing.delete(key), lockTimeoutMs);
    safety.unref?.();
    // Background work after the response: closeRedis waits for it.
    const endWork = beginWork(cache.redis);
    const done = () => {
      clearTimeout(safety);
      refreshing.delete(key);
      endWork();
    };
    run(req, key, redisKey, fromL1, done).catch(done);
  }
  return refresh;
}
