/**
 * One scenario's server process: `tsx bench/server.ts <scenario-id>` (forked by run.ts with an IPC
 * channel). Builds the scenario's app, listens on a free loopback port, primes it, reports
 * `{ type: 'ready', port, request }`, and exits on 'stop' or when the runner goes away.
 */
import type { AddressInfo } from 'node:net';
import type { RedisClient } from '../lib/client';
import { closeRedis, createRedis } from '../lib/connection';
import { SkipScenario } from './scenarios/app';
import { findScenario } from './scenarios/index';
import type { RequestSpec } from './scenarios/types';

export type ServerMessage =
  | { type: 'ready'; port: number; request: RequestSpec }
  | { type: 'skip'; reason: string }
  | { type: 'error'; message: string }
  | { type: 'commands'; calls: Record<string, number> };

/** Messages the runner sends. 'take-commands' answers the calls sent since the last take, and resets. */
export type RunnerMessage = 'stop' | 'take-commands';

let sent: Record<string, number> = {};

/**
 * Counts every command the app's client sends (pipelined ones included: ioredis routes each through
 * sendCommand). Redis's own INFO commandstats also counts the calls a Lua script makes, so it cannot
 * tell one EVALSHA round trip from five GETs; this count can.
 */
function countCommands(redis: RedisClient): RedisClient {
  const send = redis.sendCommand.bind(redis) as (...args: unknown[]) => unknown;
  (redis as { sendCommand: unknown }).sendCommand = (command: { name: string }, ...rest: unknown[]) => {
    // Lower case: redis.call('EVALSHA', …) and redis.evalsha(…) are the same command.
    const name = command.name.toLowerCase();
    sent[name] = (sent[name] ?? 0) + 1;
    return send(command, ...rest);
  };
  return redis;
}

function report(message: ServerMessage): void {
  process.send?.(message);
}

async function main(): Promise<void> {
  const id = process.argv[2] ?? '';
  const redisUrl = process.env.BENCH_REDIS_URL;
  const scenario = findScenario(id);
  if (!scenario || !redisUrl)
    throw new Error(`usage: BENCH_REDIS_URL=… server.ts <scenario-id>; got "${id}"`);

  let redis: RedisClient | undefined;
  const ctx = {
    redis: () => {
      redis ??= countCommands(createRedis({ url: redisUrl }));
      return redis;
    },
    prefix: `bench:${id.replace(/\W+/g, ':')}:`,
  };
  const built = await scenario.build(ctx);
  const server = built.app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  server.keepAliveTimeout = 60_000;
  const { port } = server.address() as AddressInfo;
  let request: RequestSpec = built.request ?? { path: '/' };
  const changes = await built.prime?.(`http://127.0.0.1:${port}`, request);
  if (changes) request = { ...request, ...changes };

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    server.closeAllConnections();
    server.close();
    await built.close?.();
    if (redis) await closeRedis(redis, { timeoutMs: 500 }).catch(() => undefined);
    process.exit(0);
  };
  process.on('message', (message: RunnerMessage) => {
    if (message === 'stop') void stop();
    if (message === 'take-commands') {
      report({ type: 'commands', calls: sent });
      sent = {};
    }
  });
  process.on('disconnect', () => void stop());
  report({ type: 'ready', port, request });
}

// A crash during priming or load is a finding, not noise: tell the runner what it was.
process.on('uncaughtException', (error) => {
  report({ type: 'error', message: `uncaught ${error.stack?.split('\n').slice(0, 2).join(' ') ?? error}` });
  setTimeout(() => process.exit(1), 50);
});

main().catch((error: unknown) => {
  if (error instanceof SkipScenario) report({ type: 'skip', reason: error.message });
  else report({ type: 'error', message: error instanceof Error ? error.message : String(error) });
  // Let the IPC message flush before going.
  setTimeout(() => process.exit(1), 50);
});
