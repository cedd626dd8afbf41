import type { Response } from 'express';
import type { ResolvedPolicy } from './options';
import type { HeadersMode } from './types';

/**
 * Writes the rate-limit headers of one decision. `reply` is the script reply (per policy i:
 * remaining at 2+3i, reset ms at 3+3i); `binding` is the policy that decides; `elapsedMs` ages a
 * cached reply (deny-cache hits).
 */
export type HeaderWriter = (
  res: Response,
  reply: readonly number[],
  binding: number,
  elapsedMs: number,
) => void;

const seconds = (ms: number): number => (ms <= 0 ? 0 : Math.ceil(ms / 1000));
const windowSeconds = (p: ResolvedPolicy): number => Math.max(1, Math.ceil(p.windowMs / 1000));

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
          res.setHeader('RateLimit-Policy', policy);
          res.setHeader('RateLimit', `${head}${reply[2]};t=${seconds(reply[3]! - elapsed)}`);
        };
      }
      return (res, reply, _binding, elapsed) => {
        let value = '';
        for (let i = 0; i < heads.length; i++) {
          value += `${i ? ', ' : ''}${heads[i]}${reply[2 + 3 * i]};t=${seconds(reply[3 + 3 * i]! - elapsed)}`;
        }
        res.setHeader('RateLimit-Policy', policy);
        res.setHeader('RateLimit', value);
      };
    }
    case 'draft-7': {
      const policy = policies.map((p) => `${p.limit};w=${windowSeconds(p)}`).join(', ');
      return (res, reply, b, elapsed) => {
        res.setHeader('RateLimit-Policy', policy);
        res.setHeader(
          'RateLimit',
          `limit=${limits[b]}, remaining=${reply[2 + 3 * b]}, reset=${seconds(reply[3 + 3 * b]! - elapsed)}`,
        );
      };
    }
    case 'draft-6': {
      const policy = policies.map((p) => `${p.limit};w=${windowSeconds(p)}`).join(', ');
      return (res, reply, b, elapsed) => {
        res.setHeader('RateLimit-Policy', policy);
        res.setHeader('RateLimit-Limit', limits[b]!);
        res.setHeader('RateLimit-Remaining', String(reply[2 + 3 * b]));
        res.setHeader('RateLimit-Reset', String(seconds(reply[3 + 3 * b]! - elapsed)));
      };
    }
    case 'legacy':
      // X-RateLimit-Reset is a Unix time in seconds, as GitHub and express-rate-limit send it.
      return (res, reply, b, elapsed) => {
        res.setHeader('X-RateLimit-Limit', limits[b]!);
        res.setHeader('X-RateLimit-Remaining', String(reply[2 + 3 * b]));
        res.setHeader(
          'X-RateLimit-Reset',
          String(Math.ceil((Date.now() + reply[3 + 3 * b]! - elapsed) / 1000)),
        );
      };
  }
}
