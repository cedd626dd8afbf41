import { type IncomingHttpHeaders, request } from 'node:http';
import { gunzipSync } from 'node:zlib';
import compression from 'compression';
import express, { type RequestHandler } from 'express';
import { MAX_BODY_SIZE } from '../../lib/body-size';
import { idempotency } from '../../lib/idempotency';
import { useRedisServer } from '../helpers/redis';
import { freshKey, useServers } from './http';

const redisServer = useRedisServer();
const servers = useServers();

interface RawAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  /** The bytes on the wire, not decoded (fetch would gunzip them). */
  raw: Buffer;
}

function post(url: string, headers: Record<string, string>): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, raw: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The body as the client reads it: gunzipped when the answer says it is gzip. */
function decoded(answer: RawAnswer): string {
  const gzip = answer.headers['content-encoding'] === 'gzip';
  return (gzip ? gunzipSync(answer.raw) : answer.raw).toString('utf8');
}

/** compression() in front of idempotency(), the layout the README documents; threshold 0 so small bodies are gzipped too. */
async function compressedRoute(handler: RequestHandler) {
  let runs = 0;
  const app = express();
  app.disable('x-powered-by');
  app.use(compression({ threshold: 0 }));
  app.post('/orders', idempotency({ redis: redisServer.client() }), (req, res, next) => {
    runs += 1;
    handler(req, res, next);
  });
  const url = `${await servers.listen(app)}/orders`;
  return { url, runs: () => runs };
}

const GZIP = { 'Accept-Encoding': 'gzip' };

describe('idempotency behind compression()', () => {
  it('replays a streamed (write + end) answer as a decodable body, compressed again for the client', async () => {
    const route = await compressedRoute((_req, res) => {
      res.type('json');
      res.write('{"order":');
      res.end('42}');
    });
    const key = freshKey('gz-stream');
    const first = await post(route.url, { ...GZIP, 'Idempotency-Key': key });
    const replay = await post(route.url, { ...GZIP, 'Idempotency-Key': key });

    expect(first.headers['content-encoding']).toBe('gzip');
    expect(decoded(first)).toBe('{"order":42}');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(replay.raw).toString('utf8')).toBe('{"order":42}');
    expect(replay.headers['content-type']).toBe(first.headers['content-type']);
    expect(route.runs()).toBe(1);

    // A client that does not accept gzip gets the plain bytes.
    const plain = await post(route.url, { 'Accept-Encoding': 'identity', 'Idempotency-Key': key });
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.raw.toString('utf8')).toBe('{"order":42}');
  });

  it('replays a non-streamed res.json() answer as a decodable body', async () => {
    const route = await compressedRoute((_req, res) => {
      res.status(201).set('Location', '/orders/9').json({ order: 9 });
    });
    const key = freshKey('gz-json');
    const first = await post(route.url, { ...GZIP, 'Idempotency-Key': key });
    const replay = await post(route.url, { ...GZIP, 'Idempotency-Key': key });

    expect(first.status).toBe(201);
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers.location).toBe('/orders/9');
    expect(decoded(replay)).toBe('{"order":9}');
    expect(decoded(replay)).toBe(decoded(first));
    expect(route.runs()).toBe(1);
  });

  it('answers 406 instead of decoding a stored body that inflates past 16 × maxBodySize for a client without gzip', async () => {
    // compression() after idempotency(): the copy is taken of the compressed bytes.
    let runs = 0;
    const app = express();
    app.post(
      '/orders',
      idempotency({ redis: redisServer.client(), maxBodySize: 8 * 1024 }),
      compression(),
      (_req, res) => {
        runs += 1;
        res.type('text/csv').send('0'.repeat(1024 * 1024));
      },
    );
    const route = { url: `${await servers.listen(app)}/orders`, runs: () => runs };
    const key = freshKey('gz-bomb');
    const first = await post(route.url, { ...GZIP, 'Idempotency-Key': key });
    expect(first.raw.length).toBeLessThan(8 * 1024);
    // A client that takes gzip gets the stored bytes, as ever.
    const replay = await post(route.url, { ...GZIP, 'Idempotency-Key': key });
    expect([replay.status, replay.headers['idempotent-replayed'], decoded(replay).length]).toEqual([
      200,
      'true',
      1024 * 1024,
    ]);
    const plain = await post(route.url, { 'Accept-Encoding': 'identity', 'Idempotency-Key': key });
    expect(plain.status).toBe(406);
    expect(plain.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(JSON.parse(plain.raw.toString('utf8')).detail).toMatch(/retry with Accept-Encoding: gzip/);
    expect(route.runs()).toBe(1);
  });

  it('still decodes for a client without gzip when maxBodySize × 16 is past the largest Buffer', async () => {
    const app = express();
    app.post(
      '/orders',
      // The largest allowed: × 16 is past the largest Buffer on Node 20 (4 GiB).
      idempotency({ redis: redisServer.client(), maxBodySize: MAX_BODY_SIZE }),
      compression({ threshold: 0 }),
      (_req, res) => {
        res.type('text/plain').send('order 7');
      },
    );
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey('gz-huge-limit');
    expect((await post(url, { ...GZIP, 'Idempotency-Key': key })).headers['content-encoding']).toBe('gzip');
    const plain = await post(url, { 'Accept-Encoding': 'identity', 'Idempotency-Key': key });
    expect([plain.headers['content-encoding'], plain.raw.toString('utf8')]).toEqual([undefined, 'order 7']);
  });

  it('stores headers passed to res.writeHead(status, headers) by a streaming handler', async () => {
    const route = await compressedRoute((_req, res) => {
      res.writeHead(201, { 'Content-Type': 'text/csv', 'X-Export': 'orders' });
      res.write('id\n');
      res.end('1\n');
    });
    const key = freshKey('gz-writehead');
    await post(route.url, { ...GZIP, 'Idempotency-Key': key });
    const replay = await post(route.url, { ...GZIP, 'Idempotency-Key': key });

    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers['content-type']).toBe('text/csv');
    expect(replay.headers['x-export']).toBe('orders');
    expect(decoded(replay)).toBe('id\n1\n');
    expect(route.runs()).toBe(1);
  });
});
