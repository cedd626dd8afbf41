import { isCluster, type RedisClient } from '../client';
import { warnSharedIndexOnce } from './warnings';

/** Cookie name of the first `redisSession()` on each Redis and prefix (see noteSharedIndex). */
interface IndexOwner {
  name: string;
  /** Its client: one closed since (an app of an earlier test) no longer owns anything. */
  client: WeakRef<RedisClient>;
}
const ownersByClient = new WeakMap<object, Map<string, IndexOwner>>();
const ownersByAddress = new Map<string, Map<string, IndexOwner>>();

/**
 * Where a client's keys live: two clients made from one URL (a createRedis() per middleware) reach
 * the same keys. A Cluster client stands for itself (its nodes change; it is seldom made twice).
 */
function addressOf(redis: RedisClient): string | undefined {
  if (isCluster(redis)) return undefined;
  const o = redis.options;
  const where = o.sentinels
    ? `sentinel:${o.name}@${o.sentinels.map((s) => `${s.host}:${s.port}`).join(',')}`
    : (o.path ?? `${o.host}:${o.port}`);
  return `${where}/${o.db ?? 0}/${o.keyPrefix ?? ''}`;
}

/**
 * Two `redisSession()` with other cookies (a site and its admin area) on one Redis and prefix are
 * two session systems sharing each user's index: one's `logoutAll()`, `revoke()` and
 * `maxSessionsPerUser` end the other's sessions, silently. Warned once; the same cookie name is one
 * system mounted twice, and is fine.
 */
export function noteSharedIndex(redis: RedisClient, prefix: string, name: string): void {
  const address = addressOf(redis);
  const owners =
    (address === undefined ? ownersByClient.get(redis) : ownersByAddress.get(address)) ??
    new Map<string, IndexOwner>();
  if (address === undefined) ownersByClient.set(redis, owners);
  else ownersByAddress.set(address, owners);
  const first = owners.get(prefix);
  const firstClient = first?.client.deref();
  if (!first || !firstClient || firstClient.status === 'end') {
    owners.set(prefix, { name, client: new WeakRef(redis) });
    return;
  }
  if (first.name === name) return;
  warnSharedIndexOnce(
    `cookies "${first.name}" and "${name}" are sessions on one Redis with one prefix ` +
      `("${prefix}"), so they share each user's session index: list(), logoutAll(), revoke() and ` +
      "maxSessionsPerUser of either reach the other's sessions. Give each its own prefix to keep them apart. (Warned once.)",
  );
}

const clientIds = new WeakMap<object, number>();
let nextClientId = 0;

/**
 * Which session system a `redisSession()` is: where its keys live, its prefix and its cookie name.
 * Two made from the same options (an app-wide one, and one a router module makes to call login())
 * are one system mounted twice: either may serve a request the other loaded the session for.
 */
export function sessionSystem(redis: RedisClient, prefix: string, name: string): string {
  let where = addressOf(redis) ?? clusterAddressOf(redis);
  if (where === undefined) {
    let id = clientIds.get(redis);
    if (id === undefined) {
      id = ++nextClientId;
      clientIds.set(redis, id);
    }
    where = `client:${id}`;
  }
  return JSON.stringify([where, prefix, name]);
}

/** A Cluster's startup nodes and key prefix: two Cluster clients made from one config reach the same keys. */
function clusterAddressOf(redis: RedisClient): string | undefined {
  if (!isCluster(redis)) return undefined;
  const nodes = (redis as unknown as { startupNodes?: unknown[] }).startupNodes;
  if (!Array.isArray(nodes) || nodes.length === 0) return undefined;
  const spelled = nodes.map((n) =>
    typeof n === 'object' && n !== null
      ? `${(n as { host?: string }).host ?? 'localhost'}:${(n as { port?: number }).port ?? 6379}`
      : String(n),
  );
  return `cluster:${[...new Set(spelled)].sort().join(',')}/${redis.options.keyPrefix ?? ''}`;
}
