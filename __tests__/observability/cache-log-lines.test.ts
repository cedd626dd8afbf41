import { inspect } from 'node:util';
import express from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { quietLogger } from '../cache/helpers';
import { useFlushedClient, useRedisServer } from '../helpers/redis';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('cacheResponse log lines and request URLs', () => {
  it('a warning about a request does not carry its query token or its scope (user id) in clear', async () => {
    const logger = quietLogger();
    const app = express();
    app.get(
      '/download',
      cacheResponse({
        redis: client,
        ttl: '1m',
        l1: false,
        logger,
        scope: () => 'user-alice@example.com',
        tags: () => {
          throw new Error('tag lookup failed');
        },
      }),
      (_req, res) => res.send('file'),
    );
    await request(app).get('/download?signature=S3CR3T-SIGNED-URL-TOKEN&access_token=AT-12345').expect(200);
    expect(logger.warnings).toHaveLength(1);
    const logged = inspect(logger.warnings[0], { depth: 5 });
    expect(logged).not.toContain('AT-12345');
    expect(logged).not.toContain('user-alice@example.com');
    // What is left still finds the entry and the route.
    expect(logger.warnings[0]!.details).toMatchObject({
      key: expect.stringMatching(/^erk:c:/),
      path: '/download',
    });
  });
});
