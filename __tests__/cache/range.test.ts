import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

  const get = (base: string, path: string, headers: Record<string, string> = {}) =>
    fetch(base + path, { headers });

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

  it('refuses 206 and 304 in `statuses`, which would replay one request’s answer to others', () => {
    expect(() => cacheResponse({ redis: client, ttl: '1m', statuses: [200, 206] })).toThrow(
      /option "statuses" cannot include 206/,
    );
    expect(() => cacheResponse({ redis: client, ttl: '1m', statuses: [304] })).toThrow(/cannot include 304/);
  });
});
