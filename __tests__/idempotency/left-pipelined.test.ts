import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express5 from 'express';
import type { RedisClient } from '../../lib/client';
import { closeRedis, createRedis } from '../../lib/connection';
import { idempotency } from '../../lib/idempotency';
import { eventually, useRedisServer } from '../helpers/redis';
import { proxyPort, startTcpProxy } from '../helpers/tcp-proxy';
import { freshKey, send, sleep, useEvents, useServers } from './http';

// As left-before-answer.test.ts, but the POST is pipelined behind a slow GET: its response is
// queued, so when the connection dies it gets no 'close' and `res.destroyed` stays false. An answer
// that cannot end (sendFile of a file larger than a response's 16 KiB buffer) must not hold the key
// until `ttl`.
const redis = useRedisServer();
const servers = useServers();
const events = useEvents();
const dir = mkdtempSync(join(tmpdir(), 'erk-probe-idem-'));
const file = join(dir, 'export.bin');
writeFileSync(file, Buffer.alloc(200_000, 'x'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it.each([
  ['while the reservation was on its way (Redis replies delayed 50 ms)', 50],
  ['(no delay: the reservation answered first)', 0],
])(
  'pipelined POST whose client left %s, then a file is sent: the retry runs after lockTtl',
  async (_what, delayMs) => {
    const proxy = await startTcpProxy(redis.server.port, { delayMs });
    const slowClient = createRedis({ url: `redis://127.0.0.1:${proxyPort(proxy)}`, logger: false });
    try {
      await slowClient.ping();
      let runs = 0;
      const make = (client: RedisClient) => {
        const app = express5();
        app.get('/slow', (_req, res) => {
          setTimeout(() => res.end('slow'), 3000);
        });
        app.post('/exports', idempotency({ redis: client, lockTtl: 300 }), (_req, res) => {
          runs += 1;
          setTimeout(() => res.sendFile(file), 100);
        });
        return app;
      };
      // The instance the pipelined request reaches talks to Redis through the slow proxy; the retry
      // goes to a second instance on a direct client (records are shared through Redis).
      const first = new URL(await servers.listen(make(slowClient)));
      const second = new URL(await servers.listen(make(redis.client())));
      const key = freshKey();
      const socket = connect(Number(first.port), first.hostname, () => {
        socket.write(
          'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n' +
            `POST /exports HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`,
        );
        setTimeout(() => socket.destroy(), delayMs > 0 ? 5 : 30);
      });
      socket.on('error', () => {});
      await eventually(() => runs === 1, 'the handler to run for the request whose client left');
      await sleep(1500); // the file was sent 1.4 s ago: well past lockTtl (300 ms)
      const retry = await send(`${second.origin}/exports`, { key });
      expect({ status: retry.status, runs, events: events.types() }).toEqual({
        status: 200,
        runs: 2,
        events: expect.arrayContaining(['first']),
      });
    } finally {
      await closeRedis(slowClient, { timeoutMs: 100 });
      proxy.close();
    }
  },
  20_000,
);
