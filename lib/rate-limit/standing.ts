import type { Request } from 'express';
import { type Mark, mark } from '../marks';
import type { HeadersMode } from './types';

/**
 * What the limiters that decided one request so far reported, for the next one on it (two
 * `rateLimit()` on one route): whose numbers `req.rateLimit` and each header mode's single-value
 * headers show. On the request under `Symbol.for` keys: another copy of the kit in the process (its
 * CJS and ESM builds) must see them too.
 */
interface Standing {
  /** `remaining` of the decision shown, and whether a dry run made it. */
  left: number;
  trial: boolean;
}

const INFO = mark<Standing>('rateLimit.standing');
// Per mode: each writes its own single-value names (draft-7's RateLimit, draft-6's and legacy's
// three); draft-8 has none, only lists.
const HEADERS: Record<Exclude<HeadersMode, 'draft-8'>, Mark<Standing>> = {
  'draft-7': mark<Standing>('rateLimit.standing.draft-7'),
  'draft-6': mark<Standing>('rateLimit.standing.draft-6'),
  legacy: mark<Standing>('rateLimit.standing.legacy'),
};

/** This limiter's decision goes into `req.rateLimit`. */
export const SHOWS_INFO = 1;
/** This limiter's numbers go into its mode's single-value headers. */
export const SHOWS_HEADERS = 4;

/**
 * Ranks this limiter's decision against those made before on the request, and records it: an
 * enforcing limiter's outranks a dry run's (which never blocks), else the one closer to denying
 * (the one that denies, else the one with less left; the earlier on a tie). Headers rank among the
 * limiters of one header mode; one with `headers: false` takes no part. Returns SHOWS_INFO |
 * SHOWS_HEADERS bits.
 */
export function rank(
  req: Request,
  left: number,
  denied: boolean,
  trial: boolean,
  mode: HeadersMode | false,
): number {
  let shown = take(INFO, req, left, denied, trial) ? SHOWS_INFO : 0;
  if (mode === false || mode === 'draft-8') return shown;
  if (take(HEADERS[mode], req, left, denied, trial)) shown |= SHOWS_HEADERS;
  return shown;
}

/** Records the decision under `kind` if it outranks the one there; whether it did. */
function take(kind: Mark<Standing>, req: Request, left: number, denied: boolean, trial: boolean): boolean {
  const standing = kind.get(req);
  if (standing === undefined) {
    kind.set(req, { left, trial });
    return true;
  }
  if (trial !== standing.trial ? !standing.trial : !denied && left >= standing.left) return false;
  standing.left = left;
  standing.trial = trial;
  return true;
}
