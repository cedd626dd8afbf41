import type { Response } from 'express';
import type { ResolvedPolicy } from './options';
import { SHOWS_HEADERS } from './standing';
import type { HeadersMode } from './types';

/**
 * Writes the rate-limit headers of one decision. `reply` is the script reply (per policy i:
 * remaining at 2+3i, reset ms at 3+3i); `binding` is the policy that decides; `elapsedMs` ages a
 * cached reply (deny-cache hits). `shown`: standing.ts's bits for this request. List headers gain
 * this limiter's policies after any there; with two `rateLimit()` on one route, the single-value
 * ones are written only with SHOWS_HEADERS (it outranks the other).
 */
export type HeaderWriter = (
  res: Response,
  reply: readonly number[],
  binding: number,
  elapsedMs: number,
  shown: number,
) => void;

const seconds = (ms: number): number => (ms <= 0 ? 0 : Math.ceil(ms / 1000));
const windowSeconds = (p: ResolvedPolicy): number => Math.max(1, Math.ceil(p.windowMs / 1000));

/**
 * Sets a list header, after the members an earlier limiter put there: another of the kit's, or
 * another library's (express-rate-limit appends its own with res.append, as one
 * string or several), so the list names every limiter's policy.
 */
function setList(res: Response, name: string, members: string): void {
  const earlier = res.getHeader(name);
  const there = Array.isArray(earlier) ? earlier.join(', ') : earlier;
  res.setHeader(name, typeof there === 'string' && there !== '' ? `${there}, ${members}` : members);
}

/** Builds the writer for a header mode once, with every constant part precomputed. */
export function headerWriter(mode: HeadersMode | false, policies: readonly ResolvedPolicy[]): HeaderWriter {
  const limits = policies.map((p) => String(p.limit));
  switch (mode) {
    case false:
      return () => {};
    case 'draft-8': {
      // draft-ietf-httpapi-ratelimit-headers-08: both fields are Structured Field Lists of named quotas.
      const policy = policies.map((p) => `"${p.name}";q=${p.limit};w=${windowSeconds(p)}`).join(', ');
      const heads = policies.map((p) => `"${p.name}";r=`);
      if (policies.length === 1) {
        const head = heads[0]!;
        return (res, reply, _binding, elapsed) => {
          setList(res, 'RateLimit-Policy', policy);
          setList(res, 'RateLimit', `${head}${reply[2]};t=${seconds(reply[3]! - elapsed)}`);
        };
      }
      return (res, reply, _binding, elapsed) => {
        let value = '';
        for (let i = 0; i < heads.length; i++) {
          value += `${i ? ', ' : ''}${heads[i]}${reply[2 + 3 * i]};t=${seconds(reply[3 + 3 * i]! - elapsed)}`;
        }
        setList(res, 'RateLimit-Policy', policy);
        setList(res, 'RateLimit', value);
      };
    }
    case 'draft-7': {
      const policy = policies.map((p) => `${p.limit};w=${windowSeconds(p)}`).join(', ');
      return (res, reply, b, elapsed, shown) => {
        setList(res, 'RateLimit-Policy', policy);
        if (!(shown & SHOWS_HEADERS)) return;
        res.setHeader(
          'RateLimit',
          `limit=${limits[b]}, remaining=${reply[2 + 3 * b]}, reset=${seconds(reply[3 + 3 * b]! - elapsed)}`,
        );
      };
    }
    case 'draft-6': {
      const policy = policies.map((p) => `${p.limit};w=${windowSeconds(p)}`).join(', ');
      return (res, reply, b, elapsed, shown) => {
        setList(res, 'RateLimit-Policy', policy);
        if (!(shown & SHOWS_HEADERS)) return;
        res.setHeader('RateLimit-Limit', limits[b]!);
        res.setHeader('RateLimit-Remaining', String(reply[2 + 3 * b]));
        res.setHeader('RateLimit-Reset', String(seconds(reply[3 + 3 * b]! - elapsed)));
      };
    }
    case 'legacy':
      // X-RateLimit-Reset is a Unix time in seconds, as GitHub and express-rate-limit send it.
      return (res, reply, b, elapsed, shown) => {
        if (!(shown & SHOWS_HEADERS)) return;
        res.setHeader('X-RateLimit-Limit', limits[b]!);
        res.setHeader('X-RateLimit-Remaining', String(reply[2 + 3 * b]));
        res.setHeader(
          'X-RateLimit-Reset',
          String(Math.ceil((Date.now() + reply[3 + 3 * b]! - elapsed) / 1000)),
        );
      };
  }
}
