import ipaddr from 'ipaddr.js';

const GROUP_CACHE_MAX = 1000;

/** `203.0.113.7:1111`, `[2001:db8::1]:1111` or `[2001:db8::1]`: some proxies (Azure) add the port. */
const IPV4_WITH_PORT = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/;
const BRACKETED_IPV6 = /^\[([0-9a-fA-F:.]+(?:%[\w.-]+)?)\](?::\d{1,5})?$/;

/**
 * Maps an IP to one spelling per client (a rate-limit key, an idempotency scope): IPv4 unchanged,
 * IPv4-mapped IPv6 (a dual-stack listener's `::ffff:203.0.113.7`) to plain IPv4, and other IPv6
 * addresses to their `/subnet` network (e.g. `2001:db8:0:1200::/56`), so a client rotating addresses
 * inside its own allocation still shares one counter; `false` keeps the whole address, in its
 * canonical form. A port after the address is dropped: each connection has its own, so keeping it
 * would make every request a new client. Non-IP strings pass through unchanged.
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
