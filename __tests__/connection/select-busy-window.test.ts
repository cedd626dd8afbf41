import type { Server } from 'node:net';
import Redis from 'ioredis';
import { closeRedis, createRedis } from '../../lib/connection';
import { eventually, useRedisServer } from '../helpers/redis';
import { proxyPort, startTcpProxy } from '../helpers/tcp-proxy';

const SPIN =
  "local t=redis.call('TIME') local s=t[1]*1000000+t[2] local e=s+tonumber(ARGV[1])*1000 " +
  "while true do local n=redis.call('TIME') if n[1]*1000000+n[2] >= e then break end end return 1";

const redis = useRedisServer({ args: ['--busy-reply-threshold', '50'] });

it.each([2, 3] as const)(
  "protocol %i: the script ends exactly between the SELECT's BUSY and the ready check: nothing in database 0",
  async (protocol) => {
    const admin0 = redis.track(new Redis(redis.server.url));
    await admin0.flushall();
    const runner = redis.track(new Redis(redis.server.url));
    await runner.ping();
    let spinning: Promise<unknown> = Promise.resolve();
    const chunks: string[] = [];
    const proxy: Server = await startTcpProxy(redis.server.port, {
      // Anything the client sends after its first chunk (the handshake) waits for the script to end.
      before: (chunk) => {
        chunks.push(chunk.toString('latin1').replace(/\r\n/g, ' ').slice(0, 60));
        return chunks.length > 1 ? spinning.then(() => undefined) : undefined;
      },
    });
    spinning = runner.eval(SPIN, 0, '400').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    const client = createRedis({
      url: `redis://127.0.0.1:${proxyPort(proxy)}/3`,
      protocol,
      logger: false,
      commandTimeout: 3000,
    });
    const seen: string[] = [];
    client.on('error', (e: Error & { command?: { name?: string } }) =>
      seen.push(`${e.command?.name}:${e.message.slice(0, 12)}`),
    );
    const writes = Array.from({ length: 5 }, (_, i) => client.set(`app-${i}`, '1').catch(() => undefined));
    try {
      await spinning;
      await Promise.all(writes);
      await eventually(() => client.status === 'ready', 'ready', 5000);
      expect(seen.some((s) => s.startsWith('select:BUSY'))).toBe(true);
      expect(await admin0.dbsize()).toBe(0);
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
      await new Promise((r) => proxy.close(r));
    }
  },
);
