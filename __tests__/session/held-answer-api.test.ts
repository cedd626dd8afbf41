import express from 'express';
import type Redis from 'ioredis';
import { configureBreaker } from '../../lib/breaker';
import { redisSession } from '../../lib/session';
import { raw } from '../helpers/raw-http';
import { useRedisServer } from '../helpers/redis';
import { useServers } from '../idempotency/http';

// redisSession holds the app's answer while it saves a changed session; when the save fails, it
// answers 503 in its place. These cases use parts of Node's response API around that swap.
const SECRET = 'held-answer-secret-held-answer-secret-xx';
const redisServer = useRedisServer();
const servers = useServers();

async function readyAgain(redis: Redis) {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve) => redis.once('ready', () => resolve()));
}

/** POST /w changes the session after Redis was killed: the save at end() fails, and 503 goes out. */
async function failingSave(handler: express.RequestHandler) {
  const redis = redisServer.plain();
  redis.on('error', () => {});
  configureBreaker(redis, { cooldownMs: 100 });
  const app = express();
  app.use(redisSession({ redis, secret: SECRET, timeout: '300ms' }));
  app.post('/w', async (req, res, next) => {
    await redisServer.server.kill();
    (req.session as unknown as { n: number }).n = 1;
    handler(req, res, next);
  });
  return { redis, base: await servers.listen(app) };
}

describe('redisSession: the 503 in place of a held answer', () => {
  it('is a 503, not a reset, when the held answer announced a Trailer', async () => {
    const { redis, base } = await failingSave((_req, res) => {
      res.setHeader('Content-Type', 'text/plain');
      res.setHeader('Trailer', 'X-Checksum');
      res.addTrailers({ 'X-Checksum': 'c0ffee' });
      res.end('abc');
    });
    try {
      const answer = await raw(`${base}/w`, { method: 'POST', timeoutMs: 3000 }).then(
        (r) => ({ status: r.status, type: r.headers['content-type'], trailer: r.headers.trailer }),
        (error: Error) => ({ error: error.message }),
      );
      expect(answer).toEqual({
        status: 503,
        type: 'application/problem+json; charset=utf-8',
        trailer: undefined,
      });
    } finally {
      await redisServer.server.restart();
      await readyAgain(redis);
    }
  });

  it("calls the handler's res.end(chunk, callback) callback once the 503 has gone out", async () => {
    const calls: string[] = [];
    const { redis, base } = await failingSave((_req, res) => {
      res.type('text').end('abc', () => calls.push('end'));
    });
    try {
      expect((await raw(`${base}/w`, { method: 'POST', timeoutMs: 3000 })).status).toBe(503);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(calls).toEqual(['end']);
    } finally {
      await redisServer.server.restart();
      await readyAgain(redis);
    }
  });
});
