import type { RequestHandler } from 'express';
import { pathOf } from '../load';
import { benchApp, kitExport, peer, send } from './app';
import { redisGet } from './baseline';
import type { BuiltApp, Group, RequestSpec, Scenario, ServerContext } from './types';

type CacheResponseFactory = (options: Record<string, unknown>) => RequestHandler;
interface Apicache {
  middleware(duration: string): RequestHandler;
  getIndex(): { all: string[] };
}

const TTL_MINUTES = 5;
const ORIGIN_MS = 20;
/**
 * Hits go round this many pre-filled URLs. With one URL, concurrent Redis lookups would be coalesced
 * into one, and "Redis hit" would measure that instead of a lookup per request.
 */
const URLS = 200;
const HITS: RequestSpec = { path: '/', cycle: URLS };
const X_CACHE_HIT = { name: 'x-cache', value: 'HIT' };

/** Requests every URL until each answers from the cache, so that measured requests are all hits. */
async function fillAll(baseUrl: string, isHit: (response: Response) => boolean): Promise<undefined> {
  let cold = Array.from({ length: URLS }, (_, i) => i);
  for (let pass = 0; pass < 10 && cold.length > 0; pass++) {
    const hits = await Promise.all(
      cold.map(async (i) => {
        const response = await send(baseUrl, { path: pathOf(HITS, i) });
        await response.arrayBuffer();
        return isHit(response);
      }),
    );
    cold = cold.filter((_, j) => !hits[j]);
    if (cold.length > 0) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (cold.length > 0) throw new Error(`${cold.length} of ${URLS} URLs never answered from the cache`);
  return undefined;
}

const kitHit = (response: Response) => response.headers.get('x-cache') === 'HIT';

function kitCache(ctx: ServerContext, delayMs: number, l1: boolean): BuiltApp['app'] {
  const cacheResponse = kitExport<CacheResponseFactory>('cache', 'cacheResponse');
  const middleware = cacheResponse({
    redis: ctx.redis(),
    ttl: `${TTL_MINUTES}m`,
    prefix: ctx.prefix,
    ...(l1 ? {} : { l1: false }),
  });
  return benchApp({ use: [middleware], delayMs });
}

function group(slow: boolean): Group {
  const id = slow ? 'cache-slow' : 'cache';
  const delayMs = slow ? ORIGIN_MS : 0;
  const uncached = slow ? 'cache-slow/uncached' : 'baseline/bare';
  // The target for a slow origin: a cached answer at least 5× the uncached one.
  const cachedTarget = slow ? { minVs: { scenario: uncached, ratio: 5 } } : {};
  const scenarios: Scenario[] = [
    {
      id: `${id}/redis-hit`,
      label: 'cacheResponse Redis hit (L1 off)',
      kind: 'kit',
      peer: `${id}/apicache`,
      header: X_CACHE_HIT,
      expect: { maxCommandsPerRequest: 1, ...cachedTarget },
      build: async (ctx) => ({
        app: kitCache(ctx, delayMs, false),
        request: HITS,
        prime: (baseUrl) => fillAll(baseUrl, kitHit),
      }),
    },
    {
      id: `${id}/l1-hit`,
      label: 'cacheResponse L1 hit',
      kind: 'kit',
      peer: `${id}/apicache`,
      header: X_CACHE_HIT,
      expect: { commandsPerRequest: 0, ...(slow ? cachedTarget : { minVsBare: 1 }) },
      build: async (ctx) => ({
        app: kitCache(ctx, delayMs, true),
        request: HITS,
        prime: (baseUrl) => fillAll(baseUrl, kitHit),
      }),
    },
    {
      id: `${id}/miss`,
      label: 'cacheResponse miss (distinct URLs)',
      kind: 'kit',
      peer: slow ? uncached : undefined,
      header: { name: 'x-cache', value: 'MISS' },
      build: async (ctx) => ({
        app: kitCache(ctx, delayMs, true),
        request: { path: '/', uniqueQuery: true },
      }),
    },
    {
      id: `${id}/apicache`,
      label: 'apicache hit (memory)',
      kind: 'peer',
      build: async () => {
        const apicache = peer<{ newInstance(): Apicache }>('apicache').newInstance();
        const cached = new Set<string>();
        return {
          app: benchApp({ use: [apicache.middleware(`${TTL_MINUTES} minutes`)], delayMs }),
          request: HITS,
          // apicache marks hits with a header only outside production; its index says what it holds.
          prime: (baseUrl) =>
            fillAll(baseUrl, (response) => {
              for (const key of apicache.getIndex().all) cached.add(key);
              return cached.has(new URL(response.url).pathname + new URL(response.url).search);
            }),
        };
      },
    },
  ];
  if (slow) {
    scenarios.unshift({
      id: uncached,
      label: `no cache, ${ORIGIN_MS} ms origin`,
      kind: 'baseline',
      build: async () => ({ app: benchApp({ delayMs }) }),
    });
  }
  return {
    id,
    title: slow ? `Response cache, route with a ${ORIGIN_MS} ms origin` : 'Response cache, trivial route',
    note: slow
      ? `Every uncached request waits ${ORIGIN_MS} ms, so its req/s is bounded by connections / ${ORIGIN_MS} ms.`
      : `Hits go round ${URLS} pre-filled URLs; the miss row stores a new entry per request.`,
    scenarios,
    references: slow ? [] : [redisGet],
  };
}

export const cacheGroup = group(false);
export const cacheSlowGroup = group(true);
