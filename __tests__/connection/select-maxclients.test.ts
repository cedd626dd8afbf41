import type { Server } from 'node:net';
import Redis from 'ioredis';
import { closeRedis, createRedis } from '../../lib/connection';
import { eventually, useRedisServer } from '../helpers/redis';
import { proxyPort, startTcpProxy } from '../helpers/tcp-proxy';

// Redis answers a connection past `maxclients` with "-ERR max number of clients reached" and closes
// it. On RESP2 without a password the first command on the wire is the handshake SELECT, so that
// reply is the SELECT's: a passing condition (a connection spike, a restart with every client
// reconnecting at once), not a refused database. The proxy stands in for any real network (on
// loopback the server's close usually beats the client's first write, and the client sees EPIPE).
const redis = useRedisServer({ args: ['--maxclients', '2'] });
let proxy: Server;
beforeAll(async () => {
  proxy = await startTcpProxy(redis.server.port);
});
afterAll(() => new Promise((r) => proxy.close(r)));

describe('maxclients reached (protocol 2, db 3, no password)', () => {
  it('at the first connect: the client is not closed for good, and no line blames the database number', async () => {
    const a = redis.track(new Redis(redis.server.url));
    const b = redis.track(new Redis(redis.server.url));
    await Promise.all([a.ping(), b.ping()]);
    const lines: string[] = [];
    const client = createRedis({
      url: `redis://127.0.0.1:${proxyPort(proxy)}/3`,
      protocol: 2,
      logger: { warn: (m: string) => lines.push(m) },
    });
    try {
      await eventually(() => lines.length > 0, 'a line', 5000);
      b.disconnect(); // a slot frees up: the client should get in at its next attempt
      await new Promise((r) => setTimeout(r, 2500));
      expect(lines.join('\n')).not.toMatch(/Fix the database number/);
      expect(client.status).toBe('ready');
    } finally {
      a.disconnect();
      await closeRedis(client, { timeoutMs: 200 });
    }
  });

  it('at a later reconnect of a working client: it keeps reconnecting and works again', async () => {
    const admin = redis.track(new Redis(redis.server.url));
    await admin.ping();
    const lines: string[] = [];
    const client = createRedis({
      url: `redis://127.0.0.1:${proxyPort(proxy)}/3`,
      protocol: 2,
      logger: { warn: (m: string) => lines.push(m) },
    });
    const filler = redis.track(new Redis({ port: redis.server.port, lazyConnect: true }));
    try {
      await client.set('k', 'v');
      const id = await client.client('ID');
      await admin.client('KILL', 'ID', String(id));
      await filler.connect(); // takes the freed slot before the client's reconnect (50-100 ms)
      await eventually(() => lines.length > 0, 'a line', 5000);
      filler.disconnect();
      await new Promise((r) => setTimeout(r, 2500));
      expect(lines.join('\n')).not.toMatch(/Fix the database number/);
      expect(client.status).toBe('ready');
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
    }
  });
});
