import { isIP } from 'node:net';
import type { Request } from 'express';
import ipaddr from 'ipaddr.js';

const GROUP_CACHE_MAX = 1000;

/** `203.0.113.7:1111`, `[2001:db8::1]:1111` or `[2001:db8::1]`: some proxies (Azure) add the port. */
const IPV4_WITH_PORT = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/;
const BRACKETED_IPV6 = /^\[([0-9a-fA-F:.]+(?:%[\w.-]+)?)\](?::\d{1,5})?$/;

/**
 * Maps an IP to its rate-limit key: IPv4 unchanged, IPv4-mapped IPv6 to plain IPv4, and other IPv6
 * addresses to their `/subnet` network (e.g. `2001:db8:0:1200::/56`), so a client rotating addresses
 * inside its own allocation still shares one counter. A port after the address is dropped: each
 * connection has its own, so keeping it would give every request a fresh counter. Non-IP strings
 * pass through unchanged.
 */
export function createIpGrouper(subnet: number | false): (ip: string) => string {
  // Parsing IPv6 costs more than the rest of the request path; clients repeat, so remember results.
  const cache = new Map<string, string>();
  return (ip) => {
    if (!ip.includes(':')) return ip;
    let grouped = cache.get(ip);
    if (grouped !== undefined) return grouped;
    grouped = groupIPv6(ip, subnet);
    if (cache.size >= GROUP_CACHE_MAX) cache.clear();
    cache.set(ip, grouped);
    return grouped;
  };
}

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

function groupIPv6(ip: string, subnet: number | false): string {
  const v4 = IPV4_WITH_PORT.exec(ip);
  if (v4) return v4[1] as string;
  const bracketed = BRACKETED_IPV6.exec(ip);
  if (bracketed) ip = bracketed[1] as string;
  let addr: ipaddr.IPv6;
  try {
    addr = ipaddr.IPv6.parse(ip);
  } catch {
    return ip;
  }
  if (addr.isIPv4MappedAddress()) return addr.toIPv4Address().toString();
  if (subnet === false || subnet === 128) return new ipaddr.IPv6(addr.parts).toString();
  const parts = addr.parts.map((part, i) => {
    const keep = Math.max(0, Math.min(16, subnet - 16 * i));
    return keep === 0 ? 0 : part & ((0xffff << (16 - keep)) & 0xffff);
  });
  return `${new ipaddr.IPv6(parts).toString()}/${subnet}`;
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
