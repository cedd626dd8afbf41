import { isIP } from 'node:net';
import type { Request } from 'express';
import { createIpGrouper } from '../ip';

export { createIpGrouper };

/**
 * What `ipv6Subnet` does to the keys of a custom `key` function: one that is exactly an IPv6 address
 * (`req.user?.id ?? req.ip`) is grouped as the default key groups it, so a client rotating addresses
 * inside its allocation cannot evade the limit. Anything else (a user id, `${req.ip}:${route}`) is
 * used as it is: a port-like suffix there may be part of the app's key.
 */
export function createCustomKeyGrouper(subnet: number | false): (key: string) => string {
  const group = createIpGrouper(subnet);
  return (key) => (key.includes(':') && isIP(key) === 6 ? group(key) : key);
}

/**
 * The default `key`: Express's `req.ip` (so the app's `trust proxy` setting decides which address is
 * the client's), IPv6 grouped. Warns once when the setup looks wrong: an `X-Forwarded-For` header
 * while `trust proxy` is off (every client behind the proxy would share one counter), or no `req.ip`.
 */
export function createDefaultKey(
  subnet: number | false,
  warn: (message: string) => void,
): (req: Request) => string {
  const group = createIpGrouper(subnet);
  let warnedForwarded = false;
  let warnedMissing = false;
  let warnedNotIp = false;
  return function defaultRateLimitKey(req) {
    if (!warnedForwarded && req.headers['x-forwarded-for'] !== undefined && !req.app?.get('trust proxy')) {
      warnedForwarded = true;
      warn(
        'express-redis-kit rateLimit: the request carries X-Forwarded-For but Express "trust proxy" is off, so ' +
          "req.ip is the proxy's address and all clients behind it share one limit. If the app runs behind a " +
          'proxy or load balancer, set app.set("trust proxy", <number of proxies>); see ' +
          'https://expressjs.com/en/guide/behind-proxies.html. (Logged once.)',
      );
    }
    const ip = req.ip;
    if (ip) {
      const key = group(ip);
      if (!warnedNotIp && isIP(key.replace(/\/\d+$/, '')) === 0) {
        warnedNotIp = true;
        warn(
          `express-redis-kit rateLimit: req.ip ${JSON.stringify(ip.slice(0, 100))} is not an IP address, so it is ` +
            'used as the key as it is: if it changes per request (a proxy adding something to X-Forwarded-For), ' +
            'every request gets its own limit. Check the proxy and "trust proxy", or pass a "key" function. (Logged once.)',
        );
      }
      return key;
    }
    if (!warnedMissing) {
      warnedMissing = true;
      warn(
        'express-redis-kit rateLimit: req.ip is missing (socket already closed, or not an Express request), so ' +
          'the socket address or the shared key "unknown" is used instead. Pass a "key" function if clients are ' +
          'identified another way. (Logged once.)',
      );
    }
    const fallback = req.socket?.remoteAddress;
    return fallback ? group(fallback) : 'unknown';
  };
}
