import express, { type ErrorRequestHandler, type Express } from 'express';
import helmet from 'helmet';
import { pingRedis, type RedisClient } from '../lib';
import { sendProblem } from '../lib/errors';

export interface DemoOptions {
  redis: RedisClient;
}

/** Builds the demo app (no listen), so supertest suites can import it. */
export function createApp({ redis }: DemoOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(helmet());
  app.use(express.json({ limit: '100kb' }));

  app.get('/healthz', async (_req, res) => {
    const health = await pingRedis(redis, { timeoutMs: 500 });
    res.status(health.ok ? 200 : 503).json({ status: health.ok ? 'ok' : 'unavailable', redis: health });
  });

  app.use((req, res) => {
    sendProblem(res, {
      type: 'about:blank',
      title: 'Not Found',
      status: 404,
      detail: `No route for ${req.method} ${req.path}`,
    });
  });

  const onError: ErrorRequestHandler = (error, _req, res, _next) => {
    const status =
      typeof error?.status === 'number' && error.status >= 400 && error.status < 600 ? error.status : 500;
    // Client errors (bad JSON, oversize body) say what was wrong; server errors never leak a stack.
    const detail =
      status < 500 ? String(error.message ?? 'Bad request') : 'Something went wrong on our side.';
    sendProblem(res, {
      type: 'about:blank',
      title: status < 500 ? 'Bad Request' : 'Internal Server Error',
      status,
      detail,
    });
  };
  app.use(onError);
  return app;
}
