import { type Cache, cacheResponse, createCache } from '../../lib/cache';
import { forgetWarnings } from '../../lib/logger';
import { useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

// A cache with an L1 is held by the client's shared subscriber (with its whole L1) until close():
// an app that makes one per request grows without bound. It is told once.
const redis = useRedisServer();

const warnings = (warn: jest.SpyInstance) =>
  warn.mock.calls.filter(([, o]) => (o as { code?: string })?.code === 'ERK_CACHE_NOT_CLOSED');

async function make(count: number, closeEach: boolean, client = redis.client()) {
  const open: Cache[] = [];
  for (let i = 0; i < count; i++) {
    const cache =
      i % 2
        ? createCache({ redis: client, logger: quietLogger() })
        : cacheResponse({ redis: client, ttl: '1m' }).cache;
    if (closeEach) await cache.close();
    else open.push(cache);
  }
  return open;
}

describe('caches with an L1 made over and over on one client', () => {
  let warn: jest.SpyInstance;
  beforeEach(() => {
    forgetWarnings('ERK_CACHE_NOT_CLOSED');
    warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
  });
  afterEach(() => warn.mockRestore());

  it('never closed: past 100 open, one ERK_CACHE_NOT_CLOSED warning says to make them once or close them', async () => {
    const client = redis.client();
    const open = await make(100, false, client);
    try {
      expect(warnings(warn)).toEqual([]);
      open.push(...(await make(30, false, client)));
      expect(warnings(warn)).toHaveLength(1);
      expect(String(warnings(warn)[0]![0])).toMatch(/not per request, or close it/);
    } finally {
      await Promise.all(open.map((c) => c.close()));
    }
  });

  it('each closed when done: no warning', async () => {
    await make(150, true);
    expect(warnings(warn)).toEqual([]);
  });
});
