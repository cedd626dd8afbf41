import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import compression from 'compression';
import express from 'express';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { useServers } from '../idempotency/http';
import { quietLogger } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});
const servers = useServers();

/** A GET without fetch's own decoding: status, headers and the bytes as sent. */
function raw(url: string, headers: Record<string, string>) {
  return new Promise<{
    status: number;
    headers: Record<string, string | string[] | undefined>;
    body: Buffer;
  }>((resolve, reject) => {
    request(url, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    })
      .on('error', reject)
      .end();
  });
}

// What res.sendFile (the `send` package) does with Range on the origin, a hit does from the stored
// body, so caching a file route does not take byte ranges (video seeking, resumed downloads) away.
describe('cacheResponse: Range requests on a hit', () => {
  const body = Buffer.from(
    Array.from({ length: 1000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join(''),
  );
  let dir: string;
  let file: string;
  let runs = 0;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'erk-range-'));
    file = join(dir, 'file.txt');
    writeFileSync(file, body);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** An app caching a res.sendFile route (/file) and a res.send one with Last-Modified (/sent). */
  function start(l1: false | { max: number } = false) {
    const app = express();
    const cache = () => cacheResponse({ redis: client, ttl: '1m', l1, logger: quietLogger() });
    app.get('/file', cache(), (_req, res) => {
      runs += 1;
      res.sendFile(file);
    });
    app.get('/sent', cache(), (_req, res) => {
      res.set('Last-Modified', 'Wed, 21 Oct 2026 07:28:00 GMT').send(body);
    });
    return servers.listen(app);
  }

  // As a media player or a download resume asks: no content coding but identity.
  const get = (base: string, path: string, headers: Record<string, string> = {}) =>
    fetch(base + path, { headers: { 'Accept-Encoding': 'identity', ...headers } });

  it.each([
    ['Redis', false],
    ['L1', { max: 10 }],
  ] as const)(
    'answers one byte range from a %s hit with 206 and Content-Range, as the origin does',
    async (_tier, l1) => {
      const url = await start(l1);
      const warm = await get(url, '/file');
      expect(warm.status).toBe(200);
      await warm.arrayBuffer();
      const before = runs;
      const part = await get(url, '/file', { Range: 'bytes=10-19' });
      expect(part.headers.get('x-cache')).toBe('HIT');
      expect(part.status).toBe(206);
      expect(part.headers.get('content-range')).toBe('bytes 10-19/1000');
      expect(part.headers.get('content-length')).toBe('10');
      expect(Buffer.from(await part.arrayBuffer()).equals(body.subarray(10, 20))).toBe(true);
      const tail = await get(url, '/file', { Range: 'bytes=-5' });
      expect(tail.headers.get('content-range')).toBe('bytes 995-999/1000');
      expect(Buffer.from(await tail.arrayBuffer()).equals(body.subarray(995))).toBe(true);
      expect(runs).toBe(before);
    },
  );

  it('a Range request that misses gets the origin’s own 206, which is not stored for others', async () => {
    const url = await start();
    const before = runs;
    const first = await get(url, '/file', { Range: 'bytes=0-9' });
    expect(first.status).toBe(206);
    expect((await first.arrayBuffer()).byteLength).toBe(10);
    const whole = await get(url, '/file');
    expect(whole.status).toBe(200);
    expect((await whole.arrayBuffer()).byteLength).toBe(1000);
    expect(runs).toBe(before + 2);
    const again = await get(url, '/file', { Range: 'bytes=0-9' });
    expect([again.status, again.headers.get('x-cache')]).toEqual([206, 'HIT']);
    await again.arrayBuffer();
    expect(runs).toBe(before + 2);
  });

  it('answers a range beyond the body with 416, and several ranges or a malformed one with the whole 200', async () => {
    const url = await start();
    await (await get(url, '/file')).arrayBuffer();
    const beyond = await get(url, '/file', { Range: 'bytes=5000-6000' });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe('bytes */1000');
    await beyond.arrayBuffer();
    for (const range of ['bytes=0-1,500-501', 'bytes=abc', 'items=0-1']) {
      const whole = await get(url, '/file', { Range: range });
      expect([range, whole.status]).toEqual([range, 200]);
      expect((await whole.arrayBuffer()).byteLength).toBe(1000);
    }
  });

  it('honours If-Range: a current strong ETag or Last-Modified date gets the range, anything else the whole body', async () => {
    const url = await start();
    const first = await get(url, '/sent');
    const etag = first.headers.get('etag')!;
    await first.arrayBuffer();
    expect(etag).toMatch(/^"/);
    const cases: Array<[string, number]> = [
      [etag, 206],
      [`W/${etag}`, 200],
      ['"something-else"', 200],
      ['Wed, 21 Oct 2026 07:28:00 GMT', 206],
      ['Tue, 20 Oct 2026 07:28:00 GMT', 200],
      ['not a date', 200],
    ];
    for (const [ifRange, status] of cases) {
      const res = await get(url, '/sent', { Range: 'bytes=0-3', 'If-Range': ifRange });
      expect(res.headers.get('x-cache')).toBe('HIT');
      expect([ifRange, res.status]).toEqual([ifRange, status]);
      expect((await res.arrayBuffer()).byteLength).toBe(status === 206 ? 4 : 1000);
    }
  });

  it('If-None-Match that matches still wins over Range (304), and HEAD ignores Range', async () => {
    const url = await start();
    const first = await get(url, '/sent');
    const etag = first.headers.get('etag')!;
    await first.arrayBuffer();
    expect((await get(url, '/sent', { Range: 'bytes=0-3', 'If-None-Match': etag })).status).toBe(304);
    const head = await fetch(`${url}/sent`, { method: 'HEAD', headers: { Range: 'bytes=0-3' } });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe('1000');
  });

  it('with compression() in front, a client that takes gzip gets the whole body, never an encoded slice', async () => {
    const app = express();
    app.use(compression({ threshold: 0 }));
    app.get(
      '/sent',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      (_req, res) => {
        res.type('text/plain').send(body);
      },
    );
    // A route that names its body identity, explicitly: still not encoded, so still compressed.
    app.get(
      '/identity',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      (_req, res) => {
        res.type('text/plain').set('Content-Encoding', 'identity').send(body);
      },
    );
    const url = await servers.listen(app);
    await (await get(url, '/sent')).arrayBuffer();
    await (await get(url, '/identity')).arrayBuffer();
    // As compression()'s negotiator reads them, each of these lets it pick gzip.
    for (const [path, acceptEncoding] of [
      ['/sent', 'gzip'],
      ['/identity', 'gzip'],
      ['/sent', 'gzip;Q=0, identity'],
      ['/sent', 'gzip;q=1abc'],
    ] as const) {
      const res = await raw(`${url}${path}`, { Range: 'bytes=0-9', 'Accept-Encoding': acceptEncoding });
      expect([path, acceptEncoding, res.headers['x-cache'], res.status]).toEqual([
        path,
        acceptEncoding,
        'HIT',
        200,
      ]);
      expect(res.headers['content-range']).toBeUndefined();
      expect(gunzipSync(res.body).equals(body)).toBe(true);
    }
    // Without gzip on offer the part goes out, and compression() leaves it alone.
    const part = await raw(`${url}/sent`, { Range: 'bytes=0-9', 'Accept-Encoding': 'identity' });
    expect([part.status, part.headers['content-range'], part.body.toString()]).toEqual([
      206,
      'bytes 0-9/1000',
      body.subarray(0, 10).toString(),
    ]);
  });

  it('with compression() behind the cache, a range of the stored gzip body is served as it is', async () => {
    const app = express();
    app.get(
      '/sent',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      compression({ threshold: 0 }),
      (_req, res) => {
        res.type('text/plain').send(body);
      },
    );
    const url = await servers.listen(app);
    const whole = await raw(`${url}/sent`, { 'Accept-Encoding': 'gzip' });
    expect(whole.headers['content-encoding']).toBe('gzip');
    const res = await raw(`${url}/sent`, { Range: 'bytes=0-9', 'Accept-Encoding': 'gzip' });
    expect([res.headers['x-cache'], res.status, res.headers['content-encoding']]).toEqual([
      'HIT',
      206,
      'gzip',
    ]);
    expect(res.headers['content-range']).toBe(`bytes 0-9/${whole.body.length}`);
    expect(res.body.equals(whole.body.subarray(0, 10))).toBe(true);
  });

  it('refuses 206 and 304 in `statuses`, which would replay one request’s answer to others', () => {
    expect(() => cacheResponse({ redis: client, ttl: '1m', statuses: [200, 206] })).toThrow(
      /option "statuses" cannot include 206/,
    );
    expect(() => cacheResponse({ redis: client, ttl: '1m', statuses: [304] })).toThrow(/cannot include 304/);
  });
});
