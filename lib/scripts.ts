import { isCluster, type RedisClient } from './client';

/** A Lua script the kit runs through EVALSHA. */
export interface ScriptDefinition {
  /** Command name on the client; the kit prefixes it so it cannot clash with the app's own. */
  readonly name: string;
  /** How many of the arguments are keys (they get the client's keyPrefix and cluster routing). */
  readonly numberOfKeys: number;
  readonly lua: string;
}

/**
 * Lua prelude that reads the Redis server clock in milliseconds into `now_ms`. Scripts use it so
 * app instances with skewed clocks agree (Redis 5+ replicates script effects, so TIME is allowed).
 */
export const LUA_NOW_MS = `local __t = redis.call('TIME')
local now_ms = tonumber(__t[1]) * 1000 + math.floor(tonumber(__t[2]) / 1000)
`;

const registry = new Map<string, ScriptDefinition>();
const definedOn = new WeakMap<object, Set<string>>();

/**
 * Registers a script once per process. Names must be unique: registering a different body under an
 * existing name is a programming error.
 */
export function defineScript(name: string, numberOfKeys: number, lua: string): ScriptDefinition {
  if (!Number.isInteger(numberOfKeys) || numberOfKeys < 0) {
    throw new Error(`express-redis-kit: script "${name}" needs a whole, non-negative numberOfKeys`);
  }
  const full = `erk_${name}`;
  const existing = registry.get(full);
  if (existing) {
    if (existing.lua !== lua || existing.numberOfKeys !== numberOfKeys) {
      throw new Error(`express-redis-kit: script "${name}" is registered twice with different bodies`);
    }
    return existing;
  }
  const def: ScriptDefinition = Object.freeze({ name: full, numberOfKeys, lua });
  registry.set(full, def);
  return def;
}

type ScriptRunner = (...args: Array<string | number | Buffer>) => Promise<unknown>;

type ScriptArgs = ReadonlyArray<string | number | Buffer>;

/**
 * Runs a registered script: one EVALSHA round trip, with ioredis falling back to EVAL (which loads
 * the script) on NOSCRIPT, e.g. after a failover or SCRIPT FLUSH. Works on Redis and Cluster.
 */
export function runScript<T = unknown>(
  redis: RedisClient,
  script: ScriptDefinition,
  keys: readonly string[],
  args: ScriptArgs,
): Promise<T> {
  return invoke(redis, script, keys, args, '') as Promise<T>;
}

/** Same as {@link runScript}, replies as Buffers (for binary payloads such as cached bodies). */
export function runScriptBuffer<T = unknown>(
  redis: RedisClient,
  script: ScriptDefinition,
  keys: readonly string[],
  args: ScriptArgs,
): Promise<T> {
  return invoke(redis, script, keys, args, 'Buffer') as Promise<T>;
}

function invoke(
  redis: RedisClient,
  script: ScriptDefinition,
  keys: readonly string[],
  args: ScriptArgs,
  suffix: '' | 'Buffer',
): Promise<unknown> {
  ensureDefined(redis, script);
  // Every ioredis command has a `<name>Buffer` twin at run time (evalBuffer is missing from the typings).
  const methods = redis as unknown as Record<string, ScriptRunner>;
  if (pendingPipelineLacks(redis, script.name)) {
    return methods[`eval${suffix}`]!.call(redis, script.lua, script.numberOfKeys, ...keys, ...args);
  }
  return methods[`${script.name}${suffix}`]!.call(redis, ...keys, ...args);
}

/**
 * ioredis copies custom commands into an auto-pipeline when the pipeline is created. A command
 * defined later and called while such a pipeline is still queued would be added to it and throw,
 * misaligning the pipeline's replies and crashing the process (ioredis issue #1931). Until those
 * pipelines are flushed, the call goes as a plain EVAL, which every pipeline has.
 */
function pendingPipelineLacks(redis: RedisClient, name: string): boolean {
  const pending = autoPipelines(redis);
  if (!pending) return false;
  for (const pipeline of pending.values()) if (typeof pipeline[name] !== 'function') return true;
  return false;
}

/**
 * ioredis's auto-pipelines queued and not yet sent, by its private `_autoPipelines` field (re-check
 * on ioredis upgrades).
 */
export function autoPipelines(redis: RedisClient): ReadonlyMap<string, Record<string, unknown>> | undefined {
  return (redis as unknown as { _autoPipelines?: Map<string, Record<string, unknown>> })._autoPipelines;
}

/**
 * Runs `send`, whose Redis calls were gathered by the kit itself over one event-loop turn and are
 * made from a `setImmediate` (the rate limiter's coalesced decisions and refunds), so that they leave
 * now, in one write per server. Through ioredis's auto-pipelining they would wait for its own
 * `setImmediate`, which, scheduled from this check phase, runs only after another whole turn of the
 * event loop: one more poll for every request of the batch, which cost the rate limiter about a
 * fifth of its throughput (bench/, 10 connections). They go the usual way when calls made before them may still be held back,
 * so that they never overtake those (a `reset()` made earlier in the turn must reach Redis first): an
 * auto-pipeline is pending, or the client is not ready (a Cluster holds auto-pipelined calls until its
 * slot map arrives, apart from the queue a direct call joins).
 */
export function sendThisTurn(redis: RedisClient, send: () => void): void {
  if (redis.status !== 'ready' || (autoPipelines(redis)?.size ?? 0) > 0) {
    send();
    return;
  }
  const options = redis.options as { enableAutoPipelining?: boolean };
  const pipelining = options.enableAutoPipelining;
  // One write per server for the whole batch of keys, as auto-pipelining would have made. The
  // scripts this sends write, so on a Cluster they go to masters.
  const streams = isCluster(redis) ? redis.nodes('master').map((node) => node.stream) : [redis.stream];
  options.enableAutoPipelining = false;
  for (const stream of streams) stream?.cork();
  try {
    send();
  } finally {
    options.enableAutoPipelining = pipelining;
    for (const stream of streams) stream?.uncork();
  }
}

function ensureDefined(redis: RedisClient, script: ScriptDefinition): void {
  let names = definedOn.get(redis);
  if (!names) {
    names = new Set();
    definedOn.set(redis, names);
  }
  if (names.has(script.name)) return;
  redis.defineCommand(script.name, { numberOfKeys: script.numberOfKeys, lua: script.lua });
  names.add(script.name);
}
