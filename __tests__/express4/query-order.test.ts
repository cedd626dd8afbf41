import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { idempotency } from '../../lib/idempotency';
import { waitForKeys } from '../cache/helpers';
import { useFlushedClient, useRedisServer } from '../helpers/redis';

const express = require('express4') as typeof import('express');
const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

// Express 4's 'extended' parser (qs) merges `f` and `f[owner]` into one array in request order.
describe('Express 4: qs merges a name with its bracketed forms in request order', () => {
  it('cacheResponse keeps ?f=open&f[owner]=me and ?f[owner]=me&f=open apart', async () => {
    const app = express();
    app.get('/list', cacheResponse({ redis: client, ttl: '1m', l1: false }), (req, res) => {
      res.json(req.query);
    });
    expect((await request(app).get('/list?f=open&f[owner]=me')).body).toEqual({
      f: ['open', { owner: 'me' }],
    });
    await waitForKeys(client, 'erk:c:*');
    const swapped = await request(app).get('/list?f[owner]=me&f=open');
    const direct = express();
    direct.get('/list', (req, res) => {
      res.json(req.query);
    });
    const expected = (await request(direct).get('/list?f[owner]=me&f=open')).body;
    // Whatever the cache answers (HIT or MISS), it must be what the route gives for this query.
    expect({ xcache: swapped.headers['x-cache'], body: swapped.body }).toEqual({
      xcache: expect.any(String),
      body: expected,
    });
  });

  it('idempotency answers 422, not the first answer, when the query reorders into another value', async () => {
    const app = express();
    let runs = 0;
    app.post('/charge', idempotency({ redis: client }), (req, res) => {
      runs++;
      res.status(201).json({ to: req.query.to });
    });
    const first = await request(app).post('/charge?to=alice&to[role]=admin').set('Idempotency-Key', 'q1');
    const retry = await request(app).post('/charge?to[role]=admin&to=alice').set('Idempotency-Key', 'q1');
    expect([first.status, runs]).toEqual([201, 1]);
    // The handler, run for the retry's query, would answer this; a replay of another value must be a 422.
    const direct = express();
    direct.post('/charge', (req, res) => {
      res.status(201).json({ to: req.query.to });
    });
    const own = (await request(direct).post('/charge?to[role]=admin&to=alice')).body;
    const replayedOther = retry.status === 201 && JSON.stringify(retry.body) !== JSON.stringify(own);
    expect({
      status: retry.status,
      replayed: retry.headers['idempotent-replayed'],
      body: retry.body,
      own,
      replayedOther,
    }).toEqual(expect.objectContaining({ replayedOther: false }));
  });
});

/** What the route itself answers for `url`, without the middleware. */
async function direct(method: 'get' | 'post', url: string): Promise<unknown> {
  const app = express();
  app[method]('/q', (req, res) => {
    res.json(req.query);
  });
  return (await request(app)[method](url)).body;
}

// qs reads a leading `[a]` as the root `a`, ignores text after a bracket (`a[b]c` is `a[b]`), and
// reads at most 1000 parameters; sorting by name alone gave both orders of such queries one key.
describe.each([
  ['a leading bracket names the root', '/q?[a]=1&a[x]=2', '/q?a[x]=2&[a]=1'],
  ['two spellings of one name', '/q?a=1&[a]=2', '/q?[a]=2&a=1'],
  ['text after a bracket', '/q?a[b]c=1&a[b]=2', '/q?a[b]=2&a[b]c=1'],
  // qs splits a part at "]=" when it has one: `a[b]x=x]=y` is `a[b]x=x]` = `y`.
  ['a value holding "]="', '/q?a[b]=x]=y&a[b]x=x]=y', '/q?a[b]x=x]=y&a[b]=x]=y'],
  [
    'more parameters than the parser reads',
    `/q?a=1&${Array.from({ length: 1000 }, (_, i) => `p${i}=x`).join('&')}`,
    `/q?${Array.from({ length: 1000 }, (_, i) => `p${i}=x`).join('&')}&a=1`,
  ],
])('Express 4 (qs): %s', (_title, first, second) => {
  it('cacheResponse answers the second order with what the route gives for it', async () => {
    const app = express();
    app.get('/q', cacheResponse({ redis: client, ttl: '1m', l1: false }), (req, res) => {
      res.json(req.query);
    });
    await request(app).get(first);
    await waitForKeys(client, 'erk:c:*');
    const answer = await request(app).get(second);
    expect(answer.body).toEqual(await direct('get', second));
  });

  it('idempotency does not replay the first order for the second', async () => {
    const app = express();
    app.post('/q', idempotency({ redis: client }), (req, res) => {
      res.json(req.query);
    });
    await request(app).post(first).set('Idempotency-Key', 'k1');
    const retry = await request(app).post(second).set('Idempotency-Key', 'k1');
    const own = await direct('post', second);
    // A 422 (another payload) or the handler's own answer; never the first order's answer.
    expect(retry.status === 422 || JSON.stringify(retry.body) === JSON.stringify(own)).toBe(true);
  });
});
