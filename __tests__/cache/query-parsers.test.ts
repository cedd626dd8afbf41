import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { quietLogger, untilHit } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('the default key and the extended (qs) query parser', () => {
  it('two queries qs parses differently do not share an entry', async () => {
    const app = express();
    app.set('query parser', 'extended');
    const mw = cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() });
    app.get('/q', mw, (req, res) => {
      res.json(req.query);
    });
    const a = '/q?a[x=y]=1';
    const b = '/q?a%5Bx=y%5D%3D1';
    const first = await untilHit(app, a);
    expect(first.body).toEqual({ a: { 'x=y': '1' } });
    const second = await request(app).get(b);
    // A different query to the app: its own entry, not the first URL's answer.
    expect([second.headers['x-cache'], second.body]).toEqual(['MISS', { a: { '[x': 'y]=1' } }]);
  });
});
