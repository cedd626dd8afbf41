import express from 'express';
import Redis from 'ioredis';
import request from 'supertest';
import { closeRedis, createRedis } from '../../lib/connection';
import { rateLimit } from '../../lib/rate-limit';
import { eventually, useRedisServer } from '../helpers/redis';

// ioredis goes ready on database 0 after the server refused its SELECT: the kit must not let the app
// and its middlewares write into another database's keys.
const redis = useRedisServer();

describe('createRedis with a database the server refuses', () => {
  it('says what to fix in one line, closes the client, and writes nothing to database 0', async () => {
    const lines: string[] = [];
    const client = createRedis({
      url: `${redis.server.url}/99`,
      logger: { warn: (m: string) => lines.push(m) },
    });
    const admin = redis.track(new Redis(redis.server.url));
    try {
      await eventually(() => lines.length > 0, 'a line', 5000);
      await client.set('written-by-db99-app', '1').catch(() => {});
      const app = express();
      app.use(rateLimit({ redis: client, limit: 5, window: '1m', logger: { warn: () => {} } }));
      app.get('/', (_req, res) => res.send('ok'));
      expect((await request(app).get('/')).status).toBe(200); // its fail mode: open
      await new Promise((r) => setTimeout(r, 200));
      expect(await admin.dbsize()).toBe(0);
      expect(client.status).toBe('end');
      expect(lines).toEqual([
        expect.stringMatching(/refused the database.*DB index is out of range.*`databases`/),
      ]);
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
    }
  });

  it.each([
    ['enableOfflineQueue: false', { enableOfflineQueue: false }],
    ['enableReadyCheck: false', { enableReadyCheck: false }],
  ])('with %s too: exactly one line, the client ends, nothing in database 0', async (_title, extra) => {
    const lines: string[] = [];
    const client = createRedis({
      url: `${redis.server.url}/99`,
      logger: { warn: (m: string) => lines.push(m) },
      ...extra,
    });
    const admin = redis.track(new Redis(redis.server.url));
    try {
      await eventually(() => lines.length > 0, 'a line', 5000);
      await new Promise((r) => setTimeout(r, 500));
      await client.set('leak', '1').catch(() => {});
      await new Promise((r) => setTimeout(r, 100));
      expect(await admin.dbsize()).toBe(0);
      expect(client.status).toBe('end');
      expect(lines).toEqual([expect.stringMatching(/refused the database/)]);
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
    }
  });

  it('with failFast, rejects naming the database problem, not "cannot reach"', async () => {
    const outcome = await createRedis({ url: `${redis.server.url}/99`, failFast: true, logger: false }).then(
      async (client) => {
        await closeRedis(client, { timeoutMs: 200 });
        return 'connected';
      },
      (error: Error) => error.message,
    );
    expect(outcome).toMatch(/refused the database the client asked for \(ERR DB index is out of range\)/);
  });

  it('with logger: false, a refused database closes the client too, and other errors still print as ioredis prints them', async () => {
    const printed: string[] = [];
    const spy = jest.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
      printed.push(args.join(' '));
    });
    const refused = createRedis({ url: `${redis.server.url}/99`, logger: false });
    const fine = createRedis({ url: `${redis.server.url}/3`, logger: false, lazyConnect: true });
    try {
      await eventually(() => refused.status === 'end', 'the refused client to close', 5000);
      (fine as unknown as { silentEmit(event: string, error: Error): void }).silentEmit(
        'error',
        new Error('boom'),
      );
      expect(printed).toEqual([expect.stringMatching(/^\[ioredis\] Unhandled error event: Error: boom/)]);
    } finally {
      spy.mockRestore();
      await closeRedis(refused, { timeoutMs: 200 });
      await closeRedis(fine, { timeoutMs: 200 });
    }
  });

  it('a database the server has works as before', async () => {
    const client = createRedis({ url: `${redis.server.url}/3`, logger: false });
    const admin = redis.track(new Redis(`${redis.server.url}/3`));
    try {
      await client.set('in-db3', '1');
      expect(await admin.get('in-db3')).toBe('1');
      expect(client.status).toBe('ready');
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
    }
  });
});

describe('createRedis on a Redis without SELECT (renamed away, a proxy without it)', () => {
  const bare = useRedisServer({ args: ['--rename-command', 'SELECT', ''] });

  it('closes the client with the database line: retrying would not help', async () => {
    const lines: string[] = [];
    const client = createRedis({
      url: `${bare.server.url}/3`,
      logger: { warn: (m: string) => lines.push(m) },
    });
    try {
      await eventually(() => lines.length > 0, 'a line', 5000);
      await new Promise((r) => setTimeout(r, 500));
      expect(lines).toEqual([
        expect.stringMatching(/refused the database the client asked for \(ERR unknown command/),
      ]);
      expect(client.status).toBe('end');
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
    }
  });

  it('failFast names the database, not "cannot reach"', async () => {
    const outcome = await createRedis({ url: `${bare.server.url}/3`, failFast: true, logger: false }).then(
      async (client) => {
        await closeRedis(client, { timeoutMs: 200 });
        return 'connected';
      },
      (error: Error) => error.message,
    );
    expect(outcome).toMatch(/refused the database/);
  });
});

describe('an ACL change that takes SELECT away after startup', () => {
  it('closes the client for good at its next connect, and the line names the ACL, not the number', async () => {
    const admin = redis.track(new Redis(redis.server.url));
    await admin.call('ACL', 'SETUSER', 'app', 'on', '>app-pass', '~*', '&*', '+@all');
    const lines: string[] = [];
    const client = createRedis({
      url: `redis://app:app-pass@127.0.0.1:${redis.server.port}/3`,
      logger: { warn: (m: string) => lines.push(m) },
    });
    try {
      await client.set('k', 'v');
      await admin.call('ACL', 'SETUSER', 'app', '-select');
      await admin.call('CLIENT', 'KILL', 'USER', 'app');
      await eventually(() => client.status === 'end', 'the client to close', 5000);
      expect(lines.find((l) => /NOPERM/.test(l))).toMatch(/Grant the ACL user the SELECT command/);
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
      await admin.call('ACL', 'DELUSER', 'app');
    }
  });
});
