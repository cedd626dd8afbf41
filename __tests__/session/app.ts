import express, { type Request, type RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import type supertest from 'supertest';
import type { RedisSessionMiddleware } from '../../lib/session';

type Data = { views?: number; role?: string };

/** A small app over a session middleware: the routes the session tests drive. */
export function sessionApp(
  sessions: RedisSessionMiddleware,
  options: {
    trustProxy?: boolean;
    beforeWrite?: () => Promise<void>;
    /** Middleware mounted before / after the session one. */
    before?: RequestHandler;
    after?: RequestHandler;
  } = {},
) {
  const app = express();
  if (options.trustProxy) app.set('trust proxy', 1);
  if (options.before) app.use(options.before);
  app.use(sessions);
  if (options.after) app.use(options.after);
  const data = (req: Request) => req.session as unknown as Data & { userId?: string };
  app.get('/me', (req, res) => {
    res.json({ userId: data(req).userId ?? null, views: data(req).views ?? 0, role: data(req).role ?? null });
  });
  app.post('/count', async (req, res) => {
    if (options.beforeWrite) await options.beforeWrite();
    data(req).views = (data(req).views ?? 0) + 1;
    res.json({ views: data(req).views });
  });
  app.post('/login/:user', async (req, res) => {
    await sessions.login(req, { userId: String(req.params.user), role: 'member' });
    // "Remember me": this session outlives the store's ttl.
    if (req.query.maxAge) req.session.cookie.maxAge = Number(req.query.maxAge);
    res.json({ id: sessions.idOf(req) });
  });
  app.post('/logout', async (req, res) => {
    await sessions.logout(req, res);
    res.status(204).end();
  });
  app.use(sessions.handleErrors);
  return app;
}

/** `name=value` of the session cookie in a response, or undefined. */
export function sessionCookie(res: supertest.Response, name = 'sid'): string | undefined {
  const raw = res.headers['set-cookie'] as unknown as string[] | undefined;
  return raw?.find((c) => c.startsWith(`${name}=`));
}

/** The session id inside a signed `sid=s%3A<id>.<sig>` cookie. */
export function sidOf(cookie: string): string {
  const value = decodeURIComponent(cookie.split(';')[0]!.split('=').slice(1).join('='));
  return value.slice(2, value.lastIndexOf('.'));
}

/** Runs `run` and counts the commands `redis` sent meanwhile (one per round trip, pipelined or not). */
export async function commandsDuring<T>(
  redis: Redis,
  run: () => Promise<T>,
): Promise<{ value: T; commands: number }> {
  const sent = jest.spyOn(redis, 'sendCommand');
  try {
    const value = await run();
    return { value, commands: sent.mock.calls.length };
  } finally {
    sent.mockRestore();
  }
}
