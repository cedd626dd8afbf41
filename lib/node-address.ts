import type { RedisOptions } from 'ioredis';
import { hidesUserInfo, maskUrl } from './mask-url';

// Node addresses as createRedis takes them (Cluster nodes, sentinels): `host:port`, `{ host, port }`
// or a `redis://` / `rediss://` URL, whose credentials and TLS are split off for every node.

/** A node as the options give it. */
export type NodeAddress = string | { host: string; port: number };

const REDIS_URL = /^rediss?:\/\//i;

export function isUrl(node: NodeAddress): node is string {
  return typeof node === 'string' && REDIS_URL.test(node);
}

export function urlAddress(url: string): { host: string; port: number } {
  const parsed = parseNodeUrl(url);
  return { host: parsed.hostname.replace(/^\[|\]$/g, ''), port: Number(parsed.port || 6379) };
}

/** The user, password and TLS a Cluster node URL carries, for every node's connection. */
export function urlAuth(url: string | undefined): Partial<RedisOptions> {
  if (url === undefined) return {};
  const parsed = parseNodeUrl(url);
  const auth: Partial<RedisOptions> = {};
  try {
    if (parsed.username) auth.username = decodeURIComponent(parsed.username);
    if (parsed.password) auth.password = decodeURIComponent(parsed.password);
  } catch {
    throw new TypeError(
      `express-redis-kit: node address "${maskUrl(url)}" has a user or password that does not decode (percent-encode "%" as %25).`,
    );
  }
  if (/^rediss:/i.test(url)) auth.tls = {};
  return auth;
}

function parseNodeUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url.replace(/^rediss?:/i, 'redis:'));
  } catch {
    throw new TypeError(`express-redis-kit: node address "${maskUrl(url)}" is not a valid Redis URL.`);
  }
  if (hidesUserInfo(parsed)) {
    throw new TypeError(
      `express-redis-kit: node address "${maskUrl(url)}" has an "@" after its host, so it would not connect where it seems to. Percent-encode "/", "?", "#" and "@" in the user name and password (encodeURIComponent).`,
    );
  }
  return parsed;
}

export function toAddress(node: NodeAddress): { host: string; port: number } {
  if (typeof node !== 'string') return node;
  const at = node.lastIndexOf(':');
  const port = Number(node.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || REDIS_URL.test(node)) {
    // Masked: a URL (a sentinel given as one) may carry a password.
    throw new TypeError(`express-redis-kit: node address "${maskUrl(node)}" must look like host:port.`);
  }
  return { host: node.slice(0, at).replace(/^\[|\]$/g, ''), port };
}
