import express from 'express';
import { cacheResponse, idempotency, rateLimit, redisSession } from '../../lib';
import { tagsReturned } from '../../lib/cache/targets';
import { shown } from '../../lib/errors';
import { useRedisServer } from '../helpers/redis';
import { freshKey, send, useServers } from '../idempotency/http';

// `scope` keys data per user. A callback that returns the user object instead of its id
// (`req => req.user`) would turn every user into "[object Object]", one key space shared by all:
// the kit refuses such an answer at the first request instead.

const redis = useRedisServer();
const servers = useServers();

/** An app whose `user` header names the caller, with the kit's middleware keyed by `scope`. */
function appWith(middleware: (scope: (req: express.Request) => unknown) => express.RequestHandler) {
  const errors: string[] = [];
  let runs = 0;
  const app = express();
  app.use(express.json());
  app.use((req, _res, next) => {
    (req as { user?: unknown }).user = { name: req.get('user') };
    next();
  });
  const mw = middleware((req) => (req as { user?: unknown }).user);
  app.all('/data', mw, (req, res) => {
    runs += 1;
    res.status(201).json({ secretOf: req.get('user') });
  });
  app.use(((error, _req, res, _next) => {
    errors.push((error as Error).message);
    res.status(500).json({ error: 'internal' });
  }) as express.ErrorRequestHandler);
  return { app, errors, runs: () => runs };
}

describe('a scope callback that returns an object', () => {
  it('idempotency: is refused with a TypeError naming "scope", and one user never gets another’s answer', async () => {
    const { app, errors, runs } = appWith((scope) =>
      idempotency({ redis: redis.client(), scope: scope as never }),
    );
    const url = `${await servers.listen(app)}/data`;
    const key = freshKey();
    const alice = await send(url, { key, headers: { user: 'alice' } });
    const bob = await send(url, { key, headers: { user: 'bob' } });
    expect([alice.status, bob.status]).toEqual([500, 500]);
    expect(bob.body.toString()).not.toContain('alice');
    expect(runs()).toBe(0);
    expect(errors[0]).toMatch(/idempotency: option "scope" must return a string or a number/);
    // The user object is named by its shape: its contents would reach logs and error pages.
    expect(errors[0]).toMatch(/got an object with keys name\.$/);
    expect(errors.join()).not.toContain('alice');
  });

  it('cacheResponse: is refused with a TypeError naming "scope", and one user never gets another’s page', async () => {
    const { app, errors } = appWith((scope) =>
      cacheResponse({ redis: redis.client(), ttl: '1m', scope: scope as never, statuses: [201] }),
    );
    const url = `${await servers.listen(app)}/data`;
    const get = (user: string) =>
      fetch(url, { headers: { user, authorization: `Bearer ${user}` } }).then(async (r) => ({
        status: r.status,
        body: await r.text(),
      }));
    expect((await get('alice')).status).toBe(500);
    const bob = await get('bob');
    expect(bob.status).toBe(500);
    expect(bob.body).not.toContain('alice');
    expect(errors[0]).toMatch(/cacheResponse: option "scope" must return a string or a number/);
    expect(errors.join()).not.toContain('alice');
  });

  it('numbers and strings still key as before', async () => {
    const { app } = appWith(() =>
      idempotency({
        redis: redis.client(),
        scope: (req) => (req.get('user') === 'n' ? 42 : req.get('user')),
      }),
    );
    const url = `${await servers.listen(app)}/data`;
    const key = freshKey();
    expect((await send(url, { key, headers: { user: 'n' } })).status).toBe(201);
    const replay = await send(url, { key, headers: { user: 'n' } });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(
      (await send(url, { key, headers: { user: 'alice' } })).headers.get('idempotent-replayed'),
    ).toBeNull();
  });

  it('rateLimit key, cache tags and sessions.login(): the error names what came back by its shape, never its contents', async () => {
    const user = { id: 7, email: 'ada@example.com', passwordHash: '$2b$10$SECRET' };
    const app = express();
    const sessions = redisSession({
      redis: redis.client(),
      secret: 'a-test-secret-of-32-characters!!',
      cookie: { secure: false },
    });
    app.use(sessions);
    app.get(
      '/rl',
      rateLimit({ redis: redis.client(), limit: 5, window: '1m', key: () => user as never }),
      (_req, res) => {
        res.send('ok');
      },
    );
    app.get('/login', async (req, res, next) => {
      try {
        await sessions.login(req, { userId: user as never });
        res.send('in');
      } catch (error) {
        next(error);
      }
    });
    const errors: string[] = [];
    app.use(((error, _req, res, _next) => {
      errors.push((error as Error).message);
      res.status(500).json({ error: 'internal' });
    }) as express.ErrorRequestHandler);
    const url = await servers.listen(app);
    expect((await fetch(`${url}/rl`)).status).toBe(500);
    expect((await fetch(`${url}/login`)).status).toBe(500);
    expect(errors).toHaveLength(2);
    for (const message of errors) {
      expect(message).toContain('got an object with keys id, email, passwordHash');
      expect(message).not.toMatch(/ada@|SECRET/);
    }
    expect(() => tagsReturned([user])).toThrow(/got an array of 1 \(object\)\.$/);
  });

  it('names even a hostile answer without throwing or letting its key names forge a line', () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    const lengthThrows = new Proxy([1], {
      get(target, name) {
        if (name === 'length') throw new Error('no');
        return Reflect.get(target, name);
      },
    });
    expect(shown(proxy)).toBe('an object');
    expect(shown(lengthThrows)).toBe('an object');
    expect(() => tagsReturned({ 'id\nFAKE LOG LINE': 1 })).toThrow(
      /got an object with keys "id\\nFAKE LOG LINE"\.$/,
    );
  });
});
