import { Router } from 'express';
import {
  type RateLimitMiddleware,
  type RedisClient,
  type RedisSessionMiddleware,
  rateLimit,
} from '../../lib';
import { allow, problem } from '../problems';

/** Login (brute-force limited), me, logout, logout-all and the session list. */
export function authRoutes(
  redis: RedisClient,
  sessions: RedisSessionMiddleware,
): { router: Router; loginLimiter: RateLimitMiddleware } {
  const router = Router();
  // A strict, separate limiter for password guessing: 5 attempts per minute per client.
  const loginLimiter = rateLimit({ redis, limit: 5, window: '1m', prefix: 'demo:login-rl:' });

  router.post('/login', loginLimiter, async (req, res) => {
    const username = typeof req.body?.username === 'string' ? req.body.username.trim() : '';
    const password = typeof req.body?.password === 'string' ? req.body.password : '';
    if (!/^[\w.@-]{1,64}$/.test(username) || password.length === 0) {
      return problem(
        res,
        400,
        'Send {"username": "...", "password": "..."} (any non-empty password works in the demo)',
      );
    }
    // Cut as the kit cuts its own copy (list()): the whole header would sit in Redis for the session's life.
    const userAgent = (req.get('user-agent') ?? 'unknown').slice(0, 256);
    await sessions.login(req, { userId: username, userAgent });
    res.json({ userId: username, session: sessions.idOf(req) });
  });

  router.get('/me', (req, res) => {
    if (!req.session?.userId) return problem(res, 401, 'Not logged in');
    res.json({ userId: req.session.userId, session: sessions.idOf(req) });
  });

  router.post('/logout', async (req, res) => {
    await sessions.logout(req, res);
    res.json({ loggedOut: true });
  });

  router.post('/logout-all', async (req, res) => {
    const userId = req.session?.userId;
    if (!userId) return problem(res, 401, 'Not logged in');
    const ended = await sessions.logoutAll(userId);
    res.json({ ended });
  });

  router.get('/sessions', async (req, res) => {
    const userId = req.session?.userId;
    if (!userId) return problem(res, 401, 'Not logged in');
    const current = sessions.idOf(req);
    const list = await sessions.list(userId);
    res.json({ sessions: list.map((s) => ({ ...s, current: s.id === current })) });
  });

  router.all('/login', allow('POST'));
  router.all('/me', allow('GET'));
  router.all('/logout', allow('POST'));
  router.all('/logout-all', allow('POST'));
  router.all('/sessions', allow('GET'));

  return { router, loginLimiter };
}
