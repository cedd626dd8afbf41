import { randomBytes } from 'node:crypto';
import { guarded } from '../guarded';
import { safePart } from '../keys';
import { runScript } from '../scripts';
import type { ResolvedOptions } from './options';
import { bindingOf, infoOf, type Reply } from './reply';
import { rateLimitScript } from './script';
import type { RateLimitInfo } from './types';

/**
 * What one `rateLimit()` computes once and its parts share (decisions, refunds, the admin API):
 * key names, the script calls with their time limits, and reading a script reply.
 */
export function createContext(o: ResolvedOptions) {
  const { redis, policies } = o;
  const count = policies.length;
  const script = rateLimitScript(count);
  const guard = { timeoutMs: o.timeoutMs, component: 'rate-limit' as const, name: o.name };
  const adminGuard = { ...guard, timeoutMs: Math.max(o.timeoutMs, 2000) };
  // Per-policy ARGV tail never changes: precompute it and copy it into each call's args.
  const policyArgs: Array<string | number> = [];
  for (const p of policies) policyArgs.push(p.code, p.limit, p.windowMs);
  // Ids unique across every app instance: sliding-window log entries, refund markers. Two that
  // coincide would count two requests as one. Not the pid (every container may run as pid 1) nor
  // Math.random() (not made to be unique, and sometimes short): 72 random bits per limiter.
  const idBase = `${randomBytes(9).toString('base64url')}.`;
  let sequence = 0;

  const keysFor = (clientKey: string): string[] => {
    const tag = safePart(clientKey);
    if (count === 1) return [o.keyHead + tag + policies[0]!.keyTail];
    const keys = new Array<string>(count);
    for (let i = 0; i < count; i++) keys[i] = o.keyHead + tag + policies[i]!.keyTail;
    return keys;
  };

  return {
    count,
    policyArgs,
    guard,
    adminGuard,
    keysFor,
    /** A key of the client's hash tag for the rate limiter's own bookkeeping (refund markers). */
    extraKey: (clientKey: string, suffix: string) => `${o.keyHead}${safePart(clientKey)}}:${suffix}`,
    nextId: () => idBase + (++sequence).toString(36),
    /**
     * One script call: `requests` is a flat list of (cost, member) pairs, answered in order. Refunds
     * have their own call (refunds.ts).
     */
    call: (keys: string[], mode: string, requests: Array<string | number>, admin = false) =>
      guarded(redis, () => runScript<Reply>(redis, script, keys, [mode, ...policyArgs, ...requests]), {
        ...(admin ? adminGuard : guard),
        key: keys[0],
      }),
    /** The policy that decides a reply: the denying one with the longest wait, else the one with least left. */
    bindingIn: (reply: Reply, allowed: boolean) => (count === 1 ? 0 : bindingOf(reply, count, allowed)),
    infoAt: (reply: Reply, b: number, key: string, elapsed: number): RateLimitInfo =>
      infoOf(reply, policies[b]!, b, key, elapsed),
  };
}

export type LimiterContext = ReturnType<typeof createContext>;
