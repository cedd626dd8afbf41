import type { ResolvedPolicy } from './options';
import type { RateLimitInfo } from './types';

/**
 * One request's answer from the rate-limit script: `[allowed, now ms, ...per policy i: remaining at
 * 2+3i, reset ms at 3+3i, retry ms at 4+3i, ...then per policy three more refund hints]`. For a
 * counted request the retry slot holds the policy's first refund hint instead (see script.ts).
 */
export type Reply = number[];

/** Reply length of one request for `count` policies. */
export const replyWidth = (count: number): number => 2 + 6 * count;

/** The policy that decides: the denying one with the longest wait, else the one with least left. */
export function bindingOf(reply: Reply, count: number, allowed: boolean): number {
  let best = 0;
  for (let i = 1; i < count; i++) {
    if (allowed ? reply[2 + 3 * i]! < reply[2 + 3 * best]! : reply[4 + 3 * i]! > reply[4 + 3 * best]!)
      best = i;
  }
  return best;
}

/** `req.rateLimit` for policy `b` of a reply that is `elapsed` ms old (deny-cache hits age). */
export function infoOf(
  reply: Reply,
  policy: ResolvedPolicy,
  b: number,
  key: string,
  elapsed: number,
): RateLimitInfo {
  const remaining = reply[2 + 3 * b]!;
  return {
    limit: policy.limit,
    remaining,
    resetMs: Math.max(0, reply[3 + 3 * b]! - elapsed),
    used: policy.limit - remaining,
    key,
    policy: policy.name,
  };
}

/** The refund hints of a counted request, four per policy, in the order the script reads them. */
export function refundHints(reply: Reply, count: number): number[] {
  const hints = new Array<number>(4 * count);
  const extra = 2 + 3 * count;
  for (let i = 0; i < count; i++) {
    hints[4 * i] = reply[4 + 3 * i]!;
    hints[4 * i + 1] = reply[extra + 3 * i]!;
    hints[4 * i + 2] = reply[extra + 3 * i + 1]!;
    hints[4 * i + 3] = reply[extra + 3 * i + 2]!;
  }
  return hints;
}
