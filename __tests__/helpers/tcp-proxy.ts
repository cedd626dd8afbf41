import { type AddressInfo, connect, createServer, type Server } from 'node:net';
import { Redis } from 'ioredis';
import type { RedisClient } from '../../lib/client';
import { closeRedis, createRedis } from '../../lib/connection';

export interface ProxyOptions {
  /**
   * Sees each chunk the client sends; answering true drops the connection right after Redis has
   * answered that chunk, so the command ran but its reply is lost (ioredis sends it again once it
   * has reconnected).
   */
  dropAfter?: (chunk: string) => boolean;
  /** Holds every reply this long. */
  delayMs?: number;
  /**
   * Sees each chunk the client sends before it goes on; a promise holds it (and every chunk after
   * it on that connection) until it settles: to act on the server first (CLIENT PAUSE, say).
   */
  before?: (chunk: Buffer) => Promise<void> | undefined;
}

/** A TCP proxy in front of the redis-server on `port`; resolves once it listens. */
export async function startTcpProxy(port: number, options: ProxyOptions = {}): Promise<Server> {
  const server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    let drop = false;
    let held: Promise<void> = Promise.resolve();
    const forward = (chunk: Buffer) => {
      if (options.dropAfter?.(chunk.toString('latin1'))) drop = true;
      upstream.write(chunk);
    };
    client.on('data', (chunk: Buffer) => {
      if (!options.before) return forward(chunk);
      held = held.then(async () => {
        await options.before?.(chunk);
        forward(chunk);
      });
    });
    upstream.on('data', (chunk) => {
      if (drop) {
        drop = false;
        client.destroy();
        upstream.destroy();
        return;
      }
      if (options.delayMs) setTimeout(() => client.writable && client.write(chunk), options.delayMs);
      else client.write(chunk);
    });
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      a.on('close', () => b.destroy());
      a.on('error', () => {});
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** The port a proxy from {@link startTcpProxy} listens on. */
export const proxyPort = (server: Server): number => (server.address() as AddressInfo).port;

/**
 * TCP proxies in front of a test's redis-server, standing in for a flaky or slow network; each call
 * answers a plain ioredis client (ioredis defaults, like a user's own) connected through a new proxy.
 * Proxies and clients are closed after each test.
 */
export function useTcpProxy(port: () => number) {
  const proxies: Server[] = [];
  const clients: Redis[] = [];
  afterEach(async () => {
    for (const client of clients.splice(0)) client.disconnect();
    await Promise.all(proxies.splice(0).map((p) => new Promise((resolve) => p.close(resolve))));
  });
  return async function proxy(options: ProxyOptions = {}): Promise<Redis> {
    const server = await startTcpProxy(port(), options);
    proxies.push(server);
    const client = new Redis(proxyPort(server), '127.0.0.1');
    client.on('error', () => {});
    clients.push(client);
    return client;
  };
}

/**
 * Kit clients (`createRedis`) on the redis-server at `port()` whose replies take `delayMs`: a Redis
 * one slow hop away, so a client can hang up while the kit's call is on its way. Each is closed,
 * with its proxy, after the test.
 */
export function useSlowKitClients(port: () => number) {
  const open: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const close of open.splice(0)) await close();
  });
  return async function slowClient(delayMs = 50): Promise<RedisClient> {
    const proxy = await startTcpProxy(port(), { delayMs });
    const client = createRedis({ url: `redis://127.0.0.1:${proxyPort(proxy)}`, logger: false });
    open.push(async () => {
      await closeRedis(client, { timeoutMs: 100 });
      proxy.close();
    });
    await client.ping();
    return client;
  };
}

/**
 * A `dropAfter` rule for a proxy: once `state.armed`, the connection drops right after the `nth`
 * script call (EVAL or EVALSHA: ioredis sends a script's source the first time on a connection),
 * so that call's reply is lost. Once only.
 */
export function dropScriptReply(nth = 1) {
  const state = { armed: false, seen: 0, dropped: 0 };
  const dropAfter = (chunk: string): boolean => {
    if (!state.armed || state.dropped > 0 || !/\r\neval(sha)?\r\n/i.test(chunk)) return false;
    if (++state.seen !== nth) return false;
    state.dropped++;
    return true;
  };
  return { state, dropAfter };
}
