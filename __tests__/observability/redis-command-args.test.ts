import { Writable } from 'node:stream';
import { inspect } from 'node:util';
import express from 'express';
import pino from 'pino';
import request from 'supertest';
import { createCache } from '../../lib/cache';
import { closeRedis, createRedis } from '../../lib/connection';
import type { KitEvent } from '../../lib/events';
import { onKitEvent } from '../../lib/events';
import { rateLimit } from '../../lib/rate-limit';
import { redisSession } from '../../lib/session';
import { eventually, useRedisServer } from '../helpers/redis';

// A Redis that requires a password; the app has a stale one (a rotation in progress, a typo).
const redis = useRedisServer({ password: 'Right-Pass-0001' });
const STALE = 'Old-Secret-Pass-9876';

function url(): string {
  return `redis://:${STALE}@127.0.0.1:${redis.server.port}`;
}

function pinoInto(lines: string[]) {
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return pino({ level: 'warn' }, sink);
}

describe('the Redis password never reaches logs, events or errors', () => {
  it('createCache with a pino logger: the L1 subscription failure does not log the password', async () => {
    const connLines: string[] = [];
    const client = createRedis({ url: url(), logger: { warn: (m: string) => connLines.push(m) } });
    const lines: string[] = [];
    const cache = createCache({ redis: client, l1: { max: 10 }, logger: pinoInto(lines) });
    try {
      await eventually(() => lines.length > 0, 'a cache warning', 8000);
      expect(connLines.join('\n')).not.toContain(STALE); // the connection's own line holds
      expect(lines.join('\n')).not.toContain(STALE);
    } finally {
      await cache.close();
      await closeRedis(client, { timeoutMs: 200 });
    }
  });

  it('createCache with the default logger (console.warn): the password is not printed', async () => {
    const client = createRedis({ url: url(), logger: false });
    const printed: string[] = [];
    const spy = jest.spyOn(console, 'warn').mockImplementation((...args: unknown[]) => {
      printed.push(args.map((a) => (typeof a === 'string' ? a : inspect(a, { depth: 10 }))).join(' '));
    });
    const cache = createCache({ redis: client, l1: { max: 10 } });
    try {
      await eventually(() => printed.length > 0, 'a console warning', 8000);
      expect(printed.join('\n')).not.toContain(STALE);
    } finally {
      spy.mockRestore();
      await cache.close();
      await closeRedis(client, { timeoutMs: 200 });
    }
  });

  it("rateLimit's fail-open event error does not carry the password", async () => {
    const client = createRedis({ url: url(), logger: false });
    const events: KitEvent[] = [];
    const off = onKitEvent((e) => {
      if (e.component === 'rate-limit') events.push(e);
    });
    const app = express();
    app.use(rateLimit({ redis: client, limit: 5, window: '1m', logger: { warn: () => {} } }));
    app.get('/', (_req, res) => res.send('ok'));
    try {
      await eventually(
        async () => {
          await request(app).get('/');
          return events.some((e) => e.type === 'fail-open');
        },
        'fail-open',
        8000,
      );
      const failOpen = events.find((e) => e.type === 'fail-open')!;
      expect(inspect(failOpen, { depth: 10 })).not.toContain(STALE);
    } finally {
      off();
      await closeRedis(client, { timeoutMs: 200 });
    }
  });

  it('redisSession: login() rejects with an error that does not carry the password', async () => {
    const client = createRedis({ url: url(), logger: false });
    const sessions = redisSession({ redis: client, secret: 'x'.repeat(32), cookie: { secure: false } });
    const app = express();
    app.use(sessions);
    let caught: unknown;
    app.post('/login', async (req, res) => {
      try {
        await sessions.login(req, { userId: 'u1' });
        res.send('in');
      } catch (error) {
        caught = error;
        res.status(503).end();
      }
    });
    try {
      // The first attempt may only meet the reconnect; retry until login() itself rejects.
      await eventually(
        async () => {
          await request(app).post('/login');
          return caught !== undefined;
        },
        'login() to reject',
        8000,
      );
      expect(inspect(caught, { depth: 10 })).not.toContain(STALE);
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
    }
  });
});

describe("a kit script's arguments never reach events or errors", () => {
  it('a session save refused under OOM: the event and the error hold no session data', async () => {
    const admin = redis.plain();
    const client = redis.client();
    const sessions = redisSession({ redis: client, secret: 'x'.repeat(32), cookie: { secure: false } });
    const app = express();
    app.use(sessions);
    app.post('/card', (req, res) => {
      (req.session as unknown as { card: string }).card = 'CARD-4242-4242-SECRET';
      res.send('kept');
    });
    const seen: KitEvent[] = [];
    const off = onKitEvent((e) => {
      if (e.component === 'session' || e.type === 'redis-error') seen.push(e);
    });
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    try {
      const res = await request(app).post('/card');
      expect(res.status).toBe(503);
      const failures = seen.filter((e) => e.error);
      expect(failures.length).toBeGreaterThan(0);
      const shown = inspect(failures, { depth: 10 });
      expect(shown).toMatch(/OOM/);
      expect(shown).not.toContain('CARD-4242');
      // What ioredis put there is kept as far as it is harmless: the command's name.
      expect(shown).toMatch(/arguments withheld/);
    } finally {
      off();
      await admin.config('SET', 'maxmemory', '0');
    }
  });
});
