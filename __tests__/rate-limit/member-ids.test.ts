import express from 'express';
import request from 'supertest';
import { rateLimit } from '../../lib/rate-limit';
import { useRedisServer } from '../helpers/redis';

const redis = useRedisServer();

describe('rateLimit ids unique across app instances', () => {
  // Containers often run every instance as the same pid, and Math.random() is no promise of
  // uniqueness: the sliding-window log entries of two instances must never coincide, or one
  // instance's requests overwrite the other's and the client gets more than `limit`.
  it('sliding-window: two instances with the same pid and the same Math.random() still count every request', async () => {
    const random = jest.spyOn(Math, 'random').mockReturnValue(0.5);
    const options = {
      algorithm: 'sliding-window',
      limit: 4,
      window: '1h',
      key: () => 'same-client',
      timeout: 5000,
      failMode: 'closed',
      prefix: 'ids:',
    } as const;
    let limiters: ReturnType<typeof rateLimit>[];
    try {
      limiters = [
        rateLimit({ ...options, redis: redis.plain() }),
        rateLimit({ ...options, redis: redis.plain() }),
      ];
    } finally {
      random.mockRestore();
    }
    const apps = limiters.map((limiter) => express().get('/', limiter, (_req, res) => void res.send('ok')));
    const statuses: number[] = [];
    // Alternating: each instance's n-th request would carry the same id as the other's.
    for (let i = 0; i < 6; i++) statuses.push((await request(apps[i % 2]!).get('/')).status);
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429]);
  });
});
