import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';
import { sleep } from './helpers';

describe('cacheResponse behind redisSession', () => {
  const redis = useRedisServer();

  it('never stores a response that starts a session: its Set-Cookie arrives only as the headers go out', async () => {
    const client = redis.client();
    const app = express();
    app.use(redisSession({ redis: client, secret: 'z'.repeat(40) }));
    let runs = 0;
    app.get('/welcome', cacheResponse({ redis: client, ttl: '1m', l1: false }), (req, res) => {
      runs += 1;
      // Personal content (a CSRF token, a cart…) that only this visitor's new session should see.
      (req.session as unknown as { token: string }).token = `t-${runs}`;
      res.json({ token: `t-${runs}` });
    });
    const first = await request(app).get('/welcome').expect(200);
    expect(first.headers['set-cookie']?.[0]).toMatch(/^sid=/);
    await sleep(100);
    const second = await request(app).get('/welcome').expect(200);
    expect(second.headers['x-cache']).not.toBe('HIT');
    expect(second.body.token).toBe('t-2');
    expect(runs).toBe(2);
    expect(await client.keys('erk:cache:*')).toEqual([]);
  });

  it('still caches a public route that does not touch the session', async () => {
    const client = redis.client();
    const app = express();
    app.use(redisSession({ redis: client, secret: 'z'.repeat(40) }));
    app.get('/public', cacheResponse({ redis: client, ttl: '1m', l1: false }), (_req, res) => {
      res.json({ hello: 'world' });
    });
    await request(app).get('/public').expect(200);
    await sleep(100);
    expect((await request(app).get('/public').expect(200)).headers['x-cache']).toBe('HIT');
  });
});
