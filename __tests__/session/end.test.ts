import express, { type Express, type RequestHandler } from 'express';
import request from 'supertest';
import { redisSession } from '../../lib/session';
import { useUnhandledRejections } from '../helpers/process';
import { useRedisServer } from '../helpers/redis';
import { sessionCookie } from './app';

const SECRET = 'end-test-secret-end-test-secret-end-test';
const redisServer = useRedisServer();

/** A session app whose POST /bad changes the session, then ends the response with `end`. */
function appWith(bad: RequestHandler, sessions = true): Express {
  const app = express();
  if (sessions) app.use(redisSession({ redis: redisServer.client(), secret: SECRET, timeout: '2s' }));
  app.post('/bad', (req, res, next) => {
    if (req.session) (req.session as unknown as { x: number }).x = 1;
    bad(req, res, next);
  });
  app.post('/good', (req, res) => {
    (req.session as unknown as { x: number }).x = 2;
    res.json({ ok: true });
  });
  return app;
}

const unhandled = useUnhandledRejections();

describe('redisSession when the handler ends the response with something Node refuses', () => {
  it('res.end(42) after changing the session gets the same 500 as without sessions, not a hang', async () => {
    const endWithNumber: RequestHandler = (_req, res) => {
      res.end(42 as unknown as string);
    };
    const without = await request(appWith(endWithNumber, false)).post('/bad').timeout(3000);
    expect(without.status).toBe(500);

    const app = appWith(endWithNumber);
    const answer = await request(app).post('/bad').timeout(3000);
    expect(answer.status).toBe(500);
    expect(answer.headers['content-type']).toBe(without.headers['content-type']);
    // The app keeps working, and the session of a good request is saved.
    const good = await request(app).post('/good').timeout(3000).expect(200);
    expect(sessionCookie(good)).toBeDefined();
    expect(unhandled).toEqual([]);
  });

  it('a throw from the deferred end() (unknown encoding) closes the connection instead of hanging', async () => {
    const app = appWith((_req, res) => {
      res.end('text', 'no-such-encoding' as BufferEncoding);
    });
    await expect(request(app).post('/bad').timeout(3000)).rejects.toThrow(/socket hang up|ECONNRESET/);
    expect(unhandled).toEqual([]);
  });
});
