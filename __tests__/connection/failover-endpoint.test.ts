import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import express from 'express';
import Redis from 'ioredis';
import request from 'supertest';
import type { RedisClient } from '../../lib/client';
import { closeRedis, createRedis } from '../../lib/connection';
import { pingRedis } from '../../lib/health';
import { redisSession } from '../../lib/session';
import { type RedisServerHandle, startRedisServer } from '../../lib/testing';
import { eventually } from '../helpers/redis';

// A managed Redis behind one address (a DNS name or VIP): after a failover, new connections reach
// the promoted replica, but open ones stay on the old master, now a replica that refuses writes.
let a: RedisServerHandle;
let b: RedisServerHandle;
let endpoint: Server;
let master = 0;
const sockets = new Set<Socket>();
/** How the replica's refusal of a script's write is worded: Redis 7.0+, or wrapped as Redis 6.2 does. */
let wording: '7.0' | '6.2' = '7.0';
let rewritten = 0;

/** Redis 6.2 wraps an error raised by redis.call inside a script (its format: redis/redis#10165). */
function as62(chunk: Buffer): Buffer {
  const text = chunk
    .toString('latin1')
    .replace(
      /-READONLY ([^\r]*?) script: ([0-9a-f]{40}), on @user_script:(\d+)\.\r\n/g,
      (_m, message: string, sha: string, line: string) =>
        `-ERR Error running script (call to f_${sha}): @user_script:${line}: @user_script: ${line}: -READONLY ${message}\r\n`,
    );
  if (text !== chunk.toString('latin1')) rewritten++;
  return Buffer.from(text, 'latin1');
}

beforeEach(async () => {
  a = await startRedisServer();
  b = await startRedisServer();
  master = a.port;
  endpoint = createServer((client) => {
    const upstream = connect(master, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => client.write(wording === '6.2' ? as62(chunk) : chunk));
    for (const s of [client, upstream]) {
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve));
});

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets.clear();
  await new Promise((resolve) => endpoint.close(resolve));
  await Promise.all([a.stop(), b.stop()]);
});

/** Promotes b, points the endpoint at it and makes a its replica. */
async function failOver(): Promise<void> {
  const [admA, admB] = [new Redis(a.port, '127.0.0.1'), new Redis(b.port, '127.0.0.1')];
  try {
    // A full sync at once, not after the default 5 s wait for more replicas.
    await admA.call('CONFIG', 'SET', 'repl-diskless-sync-delay', '0');
    await admB.call('REPLICAOF', '127.0.0.1', String(a.port));
    await eventually(async () => (await admB.dbsize()) === (await admA.dbsize()), 'b in sync');
    await admB.call('REPLICAOF', 'NO', 'ONE');
    master = b.port;
    await admA.call('REPLICAOF', '127.0.0.1', String(b.port));
  } finally {
    admA.disconnect();
    admB.disconnect();
  }
}

// The request that meets the replica gets the fail mode; the client then connects again (by its
// reconnectOnError, or made to by the kit for the app's own client).
const createRedisClient = (url: string): RedisClient => createRedis({ url, logger: false });
const ownClient = (url: string): RedisClient =>
  new Redis(url, { commandTimeout: 500, maxRetriesPerRequest: 1 });
describe.each<[string, '7.0' | '6.2', (url: string) => RedisClient]>([
  ['a createRedis client', '7.0', createRedisClient],
  ["the app's own ioredis client", '7.0', ownClient],
  ['a createRedis client', '6.2', createRedisClient],
  ["the app's own ioredis client", '6.2', ownClient],
])(
  'a failover behind the same address (%s, READONLY worded as Redis %s words it)',
  (_title, words, makeClient) => {
    beforeEach(() => {
      wording = words;
      rewritten = 0;
    });
    afterEach(() => {
      wording = '7.0';
    });

    it('serves sessions from the new master, without a restart', async () => {
      const { port } = endpoint.address() as AddressInfo;
      const redis = makeClient(`redis://127.0.0.1:${port}`);
      try {
        const sessions = redisSession({ redis, secret: 'x'.repeat(32), cookie: { secure: false } });
        const app = express();
        app.use(sessions);
        app.post('/login', async (req, res) => {
          await sessions.login(req, { userId: 'u1' });
          res.json({ ok: true });
        });
        app.get('/me', (req, res) => {
          res.json({ userId: (req.session as { userId?: string }).userId ?? null });
        });
        const agent = request.agent(app);
        await agent.post('/login').expect(200);
        await failOver();
        const seen: number[] = [];
        for (let i = 0; i < 5; i++) seen.push((await agent.get('/me')).status);
        expect(seen).toEqual([503, 200, 200, 200, 200]);
        // The refusal really went through in the wording under test.
        if (words === '6.2') expect(rewritten).toBeGreaterThan(0);
        expect((await agent.get('/me')).body).toEqual({ userId: 'u1' });
      } finally {
        await closeRedis(redis, { timeoutMs: 200 });
      }
    });
  },
);

describe('a failover behind the same address, seen by a health check', () => {
  it('pingRedis reports the connection left on the old master, and moves it: no write is needed', async () => {
    const { port } = endpoint.address() as AddressInfo;
    const redis = createRedis({ url: `redis://127.0.0.1:${port}`, logger: false });
    try {
      expect((await pingRedis(redis)).ok).toBe(true);
      await failOver();
      const first = await pingRedis(redis);
      expect([first.ok, first.error]).toEqual([false, expect.stringMatching(/replica/)]);
      // A readiness probe calls again: by then the connection is on the new master.
      await eventually(async () => (await pingRedis(redis)).ok, 'a health check that is ok again', 3000);
    } finally {
      await closeRedis(redis, { timeoutMs: 200 });
    }
  });
});

describe('a failover behind the same address, with a duplicate() of the client', () => {
  it('the duplicate reconnects on its own first READONLY too', async () => {
    const { port } = endpoint.address() as AddressInfo;
    const main = createRedis({ url: `redis://127.0.0.1:${port}`, logger: false });
    const dup = (main as Redis).duplicate();
    try {
      await main.set('x', '1');
      await dup.set('y', '1');
      await failOver();
      // Each meets the old master (now a replica) once: that write fails, and it reconnects.
      await main.set('x', '2').catch(() => {});
      await dup.set('y', '2').catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 200));
      const later: string[] = [];
      for (let i = 0; i < 3; i++) {
        later.push(
          await dup.set('y', String(i)).then(
            () => 'ok',
            (error: Error) => error.message.slice(0, 8),
          ),
        );
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(later).toEqual(['ok', 'ok', 'ok']);
    } finally {
      await closeRedis(main, { timeoutMs: 200 });
      dup.disconnect();
    }
  });
});

describe('a client whose address still leads to a replica', () => {
  it('connects again at most once a second, however many writes it refuses', async () => {
    const [admA, admB] = [new Redis(a.port, '127.0.0.1'), new Redis(b.port, '127.0.0.1')];
    const redis = createRedis({ url: b.url, logger: false });
    try {
      await admB.call('REPLICAOF', '127.0.0.1', String(a.port));
      const connections = async () =>
        Number(/total_connections_received:(\d+)/.exec(await admB.info('stats'))![1]);
      await redis.ping();
      const before = await connections();
      // Writes for a second, each refused (READONLY).
      const until = performance.now() + 1000;
      while (performance.now() < until) await redis.set('k', 'v').catch(() => {});
      expect((await connections()) - before).toBeLessThanOrEqual(2);
    } finally {
      await closeRedis(redis, { timeoutMs: 200 });
      admA.disconnect();
      admB.disconnect();
    }
  });
});
