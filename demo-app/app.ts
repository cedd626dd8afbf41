import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import express, { type ErrorRequestHandler, type Express } from 'express';
import helmet from 'helmet';
import pino, { type Logger } from 'pino';
import { pinoHttp } from 'pino-http';
import { pingRedis, type RedisClient, RedisUnavailableError, rateLimit, redisSession } from '../lib';
import { Catalogue } from './catalogue';
import { createMetrics } from './metrics';
import { allow, problem } from './problems';
import { authRoutes } from './routes/auth';
import { eventRoutes } from './routes/events';
import { leaderboardRoutes } from './routes/leaderboard';
import { orderRoutes } from './routes/orders';
import { productRoutes } from './routes/products';
import { sameOriginWrites } from './same-origin';

export interface DemoOptions {
  redis: RedisClient;
  /** Request logger; default: pino at LOG_LEVEL (info), `false` for none (tests). */
  logger?: Logger | false;
  /** Signs session cookies; default SESSION_SECRET, else a random one per process. */
  sessionSecret?: string;
  /** Latency of the fake product database, ms. Default 200. */
  catalogueLatencyMs?: number;
}

/** Builds the demo app (no listen), so supertest suites can import it. `app.locals.close()` releases it. */
export function createApp(options: DemoOptions): Express {
  const { redis } = options;
  const app = express();
  const metrics = createMetrics();
  const feed = eventRoutes(redis);
  /** Releases what the app holds: metrics listeners, and the live feeds (ended, not left hanging). */
  app.locals.close = async () => {
    metrics.close();
    feed.close();
  };
  app.disable('x-powered-by');
  app.set('trust proxy', process.env.TRUST_PROXY === '1' ? 1 : false);

  // The page is plain files: no inline script or style is needed, so the CSP allows none. The demo
  // serves plain http: helmet's upgrade-insecure-requests would send a browser that opened it by a
  // LAN address or host name to https for the script and the style sheet, and break the page.
  app.use(
    helmet({
      contentSecurityPolicy: {
        directives: { styleSrc: ["'self'"], scriptSrc: ["'self'"], upgradeInsecureRequests: null },
      },
    }),
  );
  if (options.logger !== false) {
    const logger = options.logger ?? pino({ level: process.env.LOG_LEVEL ?? 'info' });
    // Whoever reads the logs must not be able to take over a session or reuse a token.
    app.use(pinoHttp({ logger: logger.child({}, { redact: { paths: REDACTED, censor: '[redacted]' } }) }));
  }
  const publicDir = join(__dirname, 'public');
  app.use(express.static(publicDir, { index: 'index.html', maxAge: '1m' }));
  // The page's files are known paths too: another method gets 405 with Allow, not 404.
  app.all(['/', ...readdirSync(publicDir).map((file) => `/${file}`)], allow('GET'));

  app.get('/healthz', async (_req, res) => {
    const health = await pingRedis(redis, { timeoutMs: 500 });
    res.status(health.ok ? 200 : 503).json({ status: health.ok ? 'ok' : 'unavailable', redis: health });
  });
  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.all(['/healthz', '/metrics'], allow('GET'));

  // Every key of the demo under its own prefix: on a Redis it shares (a developer's local one), its
  // cache, records and sessions must not mix with another app's that uses the kit's defaults.
  const prefix = 'demo:';
  const sessions = redisSession({
    redis,
    prefix,
    secret: options.sessionSecret ?? process.env.SESSION_SECRET ?? randomBytes(32).toString('hex'),
  });
  const api = express.Router();
  api.use(sameOriginWrites);
  api.use(express.json({ limit: '16kb' }));
  api.use(rateLimit({ redis, limit: 600, window: '1m', prefix: 'demo:api-rl:' }));
  // The shared catalogue comes before the session: with rolling sessions (the default) every answer
  // to a logged-in visitor re-sends their cookie, and an answer with Set-Cookie is never cached. Its
  // one write (PUT) reads the session itself.
  api.use(productRoutes(redis, new Catalogue(redis, options.catalogueLatencyMs, prefix), prefix, sessions));
  api.use(sessions);
  // A tight limiter for the page's "hammer" button, so 429s show up within a click.
  api.get('/ping', rateLimit({ redis, limit: 10, window: '10s', prefix: 'demo:ping-rl:' }), (req, res) => {
    res.json({ pong: true, rateLimit: req.rateLimit });
  });
  api.all('/ping', allow('GET'));
  const auth = authRoutes(redis, sessions);
  api.use(auth.router);
  api.use(orderRoutes(redis, prefix));
  api.use(feed.router);
  api.use(leaderboardRoutes(redis));
  api.use(sessions.handleErrors);
  app.use('/api', api);

  app.use((req, res) => problem(res, 404, `No route for ${req.method} ${req.path}`));
  app.use(errorHandler);
  return app;
}

const REDACTED = [
  'req.headers.cookie',
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]',
];

/**
 * Replies of a Redis that cannot take writes or serve now (out of memory, a replica after a
 * failover, a failing disk, loading, a busy script, a Cluster without a majority): the request may
 * succeed shortly, so they are a 503 as an outage is, not the 500 of a bug.
 */
const CANNOT_SERVE = /^(OOM|READONLY|MISCONF|NOREPLICAS|LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN)\b/;

/** Whether an error is Redis unable to serve: unreachable, too slow, or refusing for its own state. */
function redisCannotServe(error: unknown): boolean {
  const e = error as { name?: string; message?: unknown; previousErrors?: unknown[] } | undefined;
  if (error instanceof RedisUnavailableError || e?.name === 'MaxRetriesPerRequestError') return true;
  const message = String(e?.message);
  if (/Command timed out|Connection is closed/.test(message)) return true;
  // The kit's own refusals are RedisRefusedError, a RedisUnavailableError (above); these are the
  // demo's own calls.
  if (e?.name === 'ReplyError') {
    // A MULTI whose commands Redis refused while queueing fails as EXECABORT, with their replies.
    return CANNOT_SERVE.test(message) || (e?.previousErrors ?? []).some((inner) => redisCannotServe(inner));
  }
  return false;
}

/** Client mistakes say what was wrong; Redis trouble is a 503; anything else a 500 without a stack. */
const errorHandler: ErrorRequestHandler = (error, req, res, _next) => {
  if (redisCannotServe(error)) {
    res.setHeader('Retry-After', '1');
    return problem(res, 503, 'Redis is unavailable; try again shortly.');
  }
  const status =
    typeof error?.status === 'number' && error.status >= 400 && error.status < 500 ? error.status : 500;
  if (status === 500) req.log?.error({ err: error }, 'unhandled error');
  const detail =
    error?.type === 'entity.parse.failed'
      ? 'The body is not valid JSON.'
      : error?.type === 'entity.too.large'
        ? 'The body is larger than this route accepts.'
        : status < 500
          ? String(error.message ?? 'Bad request')
          : 'Something went wrong on our side.';
  problem(res, status, detail);
};
