import express from 'express';
import Redis from 'ioredis';
import request from 'supertest';
import { cacheResponse, createCache } from '../../lib/cache';
import { idempotency } from '../../lib/idempotency';
import { rateLimit } from '../../lib/rate-limit';
import { redisSession } from '../../lib/session';
import { useRedisServer } from '../helpers/redis';

// On RESP2, ioredis refuses every command but pub/sub ones on a connection that subscribed, without
// sending them: the kit must say so, not report an outage that never ends.
const redis = useRedisServer();

describe('an app client in subscriber mode (protocol 2)', () => {
  it.each<[string, (client: Redis) => unknown]>([
    ['rateLimit', (client) => rateLimit({ redis: client, limit: 3, window: '1m' })],
    ['cacheResponse', (client) => cacheResponse({ redis: client, ttl: '1m' })],
    ['createCache', (client) => createCache({ redis: client })],
    ['idempotency', (client) => idempotency({ redis: client })],
    ['redisSession', (client) => redisSession({ redis: client, secret: 'x'.repeat(32) })],
  ])('%s refuses it at construction, naming the mode and the fix', async (_name, make) => {
    const client = redis.track(new Redis(redis.server.url, { protocol: 2 }));
    await client.subscribe('app-events');
    expect(() => make(client)).toThrow(/"redis" is a client in subscriber mode.*redis\.duplicate\(\)/);
  });

  it('subscribed after construction: the fail mode, a line naming the mode, and no breaker to wait out once it unsubscribes', async () => {
    const client = redis.track(new Redis(redis.server.url, { protocol: 2 }));
    await client.ping();
    const lines: string[] = [];
    const app = express();
    app.use(
      rateLimit({ redis: client, limit: 3, window: '1m', logger: { warn: (l: string) => lines.push(l) } }),
    );
    app.get('/', (_req, res) => res.send('ok'));
    await client.subscribe('app-events');
    for (let i = 0; i < 8; i++) expect((await request(app).get('/')).status).toBe(200); // fails open
    expect(lines).toEqual([
      expect.stringMatching(/refused the rate-limit call \(the Redis client is in subscriber mode/),
    ]);
    await client.unsubscribe('app-events');
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await request(app).get('/')).status);
    expect(codes).toEqual([200, 200, 200, 429]);
  });
});
