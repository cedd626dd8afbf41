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
    // What the app's own qs makes of each (versions differ: Express 5.0 pins qs 6.13), uncached.
    const plain = express();
    plain.set('query parser', 'extended');
    plain.get('/q', (req, res) => {
      res.json(req.query);
    });
    const a = '/q?a[x=y]=1';
    const b = '/q?a%5Bx=y%5D%3D1';
    const [parsedA, parsedB] = [(await request(plain).get(a)).body, (await request(plain).get(b)).body];
    expect(parsedA).not.toEqual(parsedB);
    const first = await untilHit(app, a);
    expect(first.body).toEqual(parsedA);
    const second = await request(app).get(b);
    // A different query to the app: its own entry, not the first URL's answer.
    expect([second.headers['x-cache'], second.body]).toEqual(['MISS', parsedB]);
  });
});

describe('the default key and a query longer than parsers read', () => {
  it('keeps apart two orders of 1001 parameters, where Express 5 reads the first 1000', async () => {
    const app = express();
    const mw = cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() });
    app.get('/q', mw, (req, res) => {
      res.json({ a: req.query.a ?? null });
    });
    const rest = Array.from({ length: 1000 }, (_, i) => `p${i}=x`).join('&');
    expect((await untilHit(app, `/q?a=1&${rest}`)).body).toEqual({ a: '1' });
    // The parser drops the last part: here, `a`.
    const second = await request(app).get(`/q?${rest}&a=1`);
    expect([second.headers['x-cache'], second.body]).toEqual(['MISS', { a: null }]);
  });
});
