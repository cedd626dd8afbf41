import type { Express, Request, RequestHandler } from 'express';
import type { SessionOptions } from 'express-session';
import { benchApp, kitExport, peer, send } from './app';
import type { BuiltApp, Group, RequestSpec } from './types';

const SECRET = 'bench-secret-bench-secret-bench-secret';

interface KitSessions extends RequestHandler {
  login(req: Request, data: { userId: string }): Promise<void>;
}
type RedisSessionFactory = (options: Record<string, unknown>) => KitSessions;

/** 401 unless the session was read: the probe then proves the read path works. */
const requireUser: RequestHandler = (req, res, next) => {
  if ((req.session as { userId?: string } | undefined)?.userId) next();
  else res.status(401).json({ error: 'no session' });
};

/** Logs in once, then every measured request carries the session cookie. */
function withLogin(
  session: RequestHandler,
  login: (req: Request) => Promise<void>,
): Pick<BuiltApp, 'app' | 'prime'> {
  const routes = (app: Express) =>
    app.post('/login', session, async (req, res, next) => {
      try {
        await login(req);
        res.json({ ok: true });
      } catch (error) {
        next(error);
      }
    });
  return {
    app: benchApp({ use: [session, requireUser], routes }),
    prime: async (baseUrl: string, request: RequestSpec) => {
      const response = await send(baseUrl, { method: 'POST', path: '/login' });
      await response.arrayBuffer();
      const cookie = response.headers.getSetCookie()[0]?.split(';')[0];
      if (!cookie) throw new Error(`login set no cookie (status ${response.status})`);
      return { headers: { ...request.headers, cookie } };
    },
  };
}

export const sessionGroup: Group = {
  id: 'session',
  title: 'Sessions, read path',
  note: 'A logged-in request: load the session, slide its expiry (rolling), answer. Nothing is modified.',
  scenarios: [
    {
      id: 'session/kit',
      label: 'redisSession read',
      kind: 'kit',
      peer: 'session/connect-redis',
      build: async (ctx) => {
        const redisSession = kitExport<RedisSessionFactory>('session', 'redisSession');
        const sessions = redisSession({ redis: ctx.redis(), secret: SECRET, prefix: ctx.prefix });
        return withLogin(sessions, (req) => sessions.login(req, { userId: 'u1' }));
      },
    },
    {
      id: 'session/connect-redis',
      label: 'express-session + connect-redis',
      kind: 'peer',
      build: async (ctx) => {
        const { RedisStore } = peer<typeof import('connect-redis')>('connect-redis');
        const expressSession = peer<(options: SessionOptions) => RequestHandler>('express-session');
        const session = expressSession({
          store: new RedisStore({ client: ctx.redis(), prefix: ctx.prefix }),
          secret: SECRET,
          name: 'sid',
          resave: false,
          saveUninitialized: false,
          rolling: true,
          cookie: { httpOnly: true, sameSite: 'lax', maxAge: 86_400_000 },
        });
        const login = (req: Request) =>
          new Promise<void>((resolve, reject) =>
            req.session.regenerate((error) => {
              if (error) return reject(error);
              (req.session as { userId?: string }).userId = 'u1';
              req.session.save((e) => (e ? reject(e) : resolve()));
            }),
          );
        return withLogin(session, login);
      },
    },
  ],
};
