/**
 * Names of the cookies of every `redisSession()` made in this process, so `cacheResponse` counts them
 * as per-user whatever they are called (`app`, `myapp_s`): a route reading `req.session` would
 * otherwise store one user's page for the others. On `globalThis`, so that an app that loads the kit
 * twice (its ESM and CommonJS builds) still has one list.
 */
const REGISTRY = Symbol.for('express-redis-kit.session-cookie-names');

export function kitSessionCookies(): Set<string> {
  const global = globalThis as { [REGISTRY]?: Set<string> };
  global[REGISTRY] ??= new Set();
  return global[REGISTRY];
}
