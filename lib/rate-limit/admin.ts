import { shown } from '../errors';
import { guarded } from '../guarded';
import { createCustomKeyGrouper, createIpGrouper } from './client-key';
import type { LimiterContext } from './context';
import type { DenyCache } from './deny-cache';
import type { ResolvedOptions } from './options';
import { MODE_PEEK } from './script';
import type { RateLimitState } from './types';

/** The admin API on the middleware: `reset(key)` and `get(key)`, with the admin time limit. */
export function createAdmin(o: ResolvedOptions, ctx: LimiterContext, denyCache: DenyCache | undefined) {
  const group = o.key ? createCustomKeyGrouper(o.ipv6Subnet) : createIpGrouper(o.ipv6Subnet);
  // A missing or object key would act on "undefined" or "[object Object]" and report success.
  const normalizeAdminKey = (key: unknown, method: string): string => {
    if ((typeof key === 'string' && key !== '') || (typeof key === 'number' && Number.isFinite(key))) {
      return group(String(key));
    }
    throw new TypeError(
      `express-redis-kit: limiter.${method}(key) takes the client's key (a non-empty string, as in req.rateLimit.key); got ${shown(key)}.`,
    );
  };

  /** Forgets everything about `key` (as in `req.rateLimit.key`; raw IPs are grouped like requests). */
  async function reset(key: string | number): Promise<void> {
    const clientKey = normalizeAdminKey(key, 'reset');
    // Denials sent before the DEL come back after this point: they must not be remembered.
    denyCache?.forget(clientKey);
    const keys = ctx.keysFor(clientKey);
    await guarded(o.redis, () => o.redis.del(...keys), { ...ctx.adminGuard, key: keys[0] });
  }

  /** Reads `key`'s state without counting anything. */
  async function get(key: string | number): Promise<RateLimitState> {
    const clientKey = normalizeAdminKey(key, 'get');
    const reply = await ctx.call(ctx.keysFor(clientKey), MODE_PEEK, [0, '-'], true);
    const b = ctx.bindingIn(reply, true);
    return {
      ...ctx.infoAt(reply, b, clientKey, 0),
      policies: o.policies.map((p, i) => ({
        policy: p.name,
        limit: p.limit,
        remaining: reply[2 + 3 * i]!,
        used: p.limit - reply[2 + 3 * i]!,
        resetMs: reply[3 + 3 * i]!,
      })),
    };
  }

  return { reset, get };
}
