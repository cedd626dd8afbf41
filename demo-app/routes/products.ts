import { type Request, type RequestHandler, Router } from 'express';
import { cacheResponse, createCache, type RedisClient } from '../../lib';
import { type Catalogue, sleep } from '../catalogue';
import { allow, problem } from '../problems';
import { requireUser } from '../require-user';

const productTags = (req: Request) => [`product:${req.params.id}`];

/**
 * GET /api/products/:id is cached (tags, stale-while-revalidate); PUT invalidates it by tag after a 2xx.
 * GET /api/reports/:year goes through cache.wrap with single-flight over a slow computation.
 */
export function productRoutes(
  redis: RedisClient,
  catalogue: Catalogue,
  prefix: string,
  sessions: RequestHandler,
): Router {
  const router = Router();
  const cache = createCache({ redis, prefix, l1: { max: 500 } });
  const products = cacheResponse({
    redis,
    cache,
    ttl: '30s',
    staleWhileRevalidate: '2m',
    tags: productTags,
    // The catalogue is the same for everyone, so a logged-in visitor's session cookie need not bypass
    // the cache (this router runs before the session, so their answers carry no Set-Cookie and are
    // stored too). Routes whose answer depends on the user must pass `scope` instead.
    sessionCookie: false,
    // The route reads no query: `?cb=<random>` must not store a copy per request.
    query: [],
  });

  router.get('/products/:id', products, async (req, res) => {
    const product = await catalogue.get(String(req.params.id));
    if (!product) return problem(res, 404, `No product ${req.params.id}`);
    // builtAt shows when the origin really ran: a cached answer keeps the old time.
    res.json({ product, builtAt: new Date().toISOString(), builtBy: process.pid });
  });

  // A write: only for visitors who logged in (the demo's catalogue is shared by everyone).
  const canEdit = requireUser('only logged-in visitors change prices');
  router.put('/products/:id', sessions, canEdit, products.invalidates(productTags), async (req, res) => {
    const price = req.body?.price;
    if (typeof price !== 'number' || !Number.isFinite(price) || price < 0 || price > 100_000)
      return problem(res, 400, 'Body must be JSON like {"price": 12.5} (0 to 100000)');
    const product = await catalogue.update(String(req.params.id), { price });
    if (!product) return problem(res, 404, `No product ${req.params.id}`);
    res.json({ product, invalidated: productTags(req) });
  });

  router.get('/reports/:year', async (req, res) => {
    const year = Number(req.params.year);
    if (!Number.isInteger(year) || year < 2000 || year > 2100)
      return problem(res, 400, 'year must be 2000–2100');
    const started = performance.now();
    const report = await cache.wrap(`report:${year}`, () => buildReport(year), { ttl: '1m' });
    res.json({ ...report, servedInMs: Math.round(performance.now() - started) });
  });

  router.all('/products/:id', allow('GET', 'PUT'));
  router.all('/reports/:year', allow('GET'));

  return router;
}

/** A deliberately slow "analytics query". */
async function buildReport(year: number) {
  await sleep(1000);
  const months = Array.from({ length: 12 }, (_, m) => ({
    month: m + 1,
    orders: ((year * 31 + m * 17) % 900) + 100,
  }));
  return {
    year,
    months,
    total: months.reduce((sum, m) => sum + m.orders, 0),
    builtAt: new Date().toISOString(),
  };
}
