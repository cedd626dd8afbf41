import type { Request } from 'express';

/**
 * What the limiters that decided one request so far reported, for the next one on it (two
 * `rateLimit()` on one route): whose numbers `req.rateLimit` and the single-value headers show.
 * `Symbol.for`: another copy of the kit in the process (its CJS and ESM builds) must see it too.
 */
const STANDING = Symbol.for('express-redis-kit.rateLimit.standing');

interface Standing {
  /** `remaining` of the decision `req.rateLimit` shows, and whether a dry run made it. */
  infoLeft: number;
  infoTrial: boolean;
  /** The same for the single-value headers; NaN while no limiter wrote headers. */
  headersLeft: number;
  headersTrial: boolean;
}

/** This limiter's decision goes into `req.rateLimit`. */
export const SHOWS_INFO = 1;
/** Another limiter wrote rate-limit headers before: list headers gain this one's policies. */
export const HEADERS_AFTER = 2;
/** This limiter's numbers go into the single-value headers. */
export const SHOWS_HEADERS = 4;

/**
 * Ranks this limiter's decision against those made before on the request, and records it: an
 * enforcing limiter's outranks a dry run's (which never blocks), else the one closer to denying
 * (the one that denies, else the one with less left; the earlier on a tie). A limiter that writes
 * no headers takes no part in the headers' ranking. Returns SHOWS_INFO | HEADERS_AFTER | SHOWS_HEADERS bits.
 */
export function rank(
  req: Request,
  left: number,
  denied: boolean,
  trial: boolean,
  writesHeaders: boolean,
): number {
  const marks = req as unknown as Record<symbol, Standing | undefined>;
  const standing = marks[STANDING];
  if (standing === undefined) {
    marks[STANDING] = {
      infoLeft: left,
      infoTrial: trial,
      headersLeft: writesHeaders ? left : Number.NaN,
      headersTrial: trial,
    };
    return SHOWS_INFO | SHOWS_HEADERS;
  }
  let shown = 0;
  if (outranks(left, trial, denied, standing.infoLeft, standing.infoTrial)) {
    shown |= SHOWS_INFO;
    standing.infoLeft = left;
    standing.infoTrial = trial;
  }
  if (!writesHeaders) return shown;
  if (Number.isNaN(standing.headersLeft)) shown |= SHOWS_HEADERS;
  else {
    shown |= HEADERS_AFTER;
    if (outranks(left, trial, denied, standing.headersLeft, standing.headersTrial)) shown |= SHOWS_HEADERS;
  }
  if (shown & SHOWS_HEADERS) {
    standing.headersLeft = left;
    standing.headersTrial = trial;
  }
  return shown;
}

function outranks(
  left: number,
  trial: boolean,
  denied: boolean,
  standingLeft: number,
  standingTrial: boolean,
) {
  if (trial !== standingTrial) return standingTrial;
  return denied || left < standingLeft;
}
