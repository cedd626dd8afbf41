import type { RequestHandler } from 'express';
import { problem } from './problems';

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Refuses writes that a browser sends for another origin. `SameSite=Lax` keeps the session cookie off
 * other sites' POSTs, but a site is not an origin: a page on another port of the same host, or on a
 * sibling subdomain, still sends it, and an empty form POST to `/api/logout-all` needs no body. Browsers
 * say where a request comes from (`Sec-Fetch-Site`, else `Origin`); clients that send neither (curl,
 * server-to-server) are not browsers carrying someone's cookie, and pass.
 */
export const sameOriginWrites: RequestHandler = (req, res, next) => {
  if (SAFE.has(req.method)) return next();
  const site = req.get('sec-fetch-site');
  if (site !== undefined) {
    if (site === 'same-origin' || site === 'none') return next();
    return problem(res, 403, `Cross-site ${req.method} refused (Sec-Fetch-Site: ${site})`);
  }
  const origin = req.get('origin');
  // req.host: the Host as the client sent it, X-Forwarded-Host when "trust proxy" trusts the proxy.
  if (origin === undefined || hostOf(origin) === req.host) return next();
  problem(res, 403, `Cross-origin ${req.method} refused (Origin: ${origin.slice(0, 100)})`);
};

function hostOf(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    // "null" (a sandboxed frame, a file: page) and anything unreadable.
    return undefined;
  }
}
