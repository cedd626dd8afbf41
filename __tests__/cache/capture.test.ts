import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import compression from 'compression';
import express from 'express';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { raw } from '../helpers/raw-http';
import { useFlushedClient, useRedisServer } from '../helpers/redis';
import { listen, quietLogger } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

/** A raw GET (no automatic decompression), so what went over the wire is what the test sees. */
function rawGet(url: string, headers: Record<string, string> = {}) {
  return new Promise<{ headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
      })
      .on('error', reject);
  });
}

const decoded = (res: { headers: http.IncomingHttpHeaders; body: Buffer }) =>
  (res.headers['content-encoding'] === 'gzip' ? gunzipSync(res.body) : res.body).toString();

describe('cacheResponse behind compression()', () => {
  const dir = mkdtempSync(join(tmpdir(), 'erk-capture-'));
  const file = join(dir, 'doc.txt');
  const doc = 'x'.repeat(4096);
  writeFileSync(file, doc);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const routes: Array<[string, express.RequestHandler, string]> = [
    [
      'res.write + res.end',
      (_req, res) => {
        res.type('text/plain');
        res.write('hello ');
        res.end('world');
      },
      'hello world',
    ],
    ['res.sendFile', (_req, res) => res.sendFile(file), doc],
  ];

  it.each(routes)(
    'stores the identity body of a streamed response (%s): the gzip HIT decodes to the same body',
    async (_name, route, body) => {
      const app = express();
      app.use(compression({ threshold: 0 }));
      app.get('/r', cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }), route);
      const server = await listen(app);
      const events = captureEvents('cache');
      try {
        const miss = await rawGet(`${server.url}/r`, { 'accept-encoding': 'gzip' });
        expect(miss.headers['x-cache']).toBe('MISS');
        expect(decoded(miss)).toBe(body);
        await events.waitFor('store', 1);
        const hit = await rawGet(`${server.url}/r`, { 'accept-encoding': 'gzip' });
        expect(hit.headers['x-cache']).toBe('HIT');
        expect(hit.headers['content-encoding']).toBe('gzip');
        expect(decoded(hit)).toBe(body);
        const plain = await rawGet(`${server.url}/r`, { 'accept-encoding': 'identity' });
        expect(plain.headers['content-encoding']).toBeUndefined();
        expect(plain.body.toString()).toBe(body);
      } finally {
        events.stop();
        await server.close();
      }
    },
  );
});

describe('cacheResponse ETags of streamed answers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'erk-etag-'));
  const file = join(dir, 'doc.txt');
  writeFileSync(file, 'y'.repeat(4096));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a hit keeps the ETag res.sendFile sent on the miss, so that client revalidates with a 304', async () => {
    const app = express();
    app.get(
      '/doc',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      (_req, res) => res.sendFile(file),
    );
    const server = await listen(app);
    const events = captureEvents('cache');
    try {
      const miss = await rawGet(`${server.url}/doc`);
      expect(miss.headers['x-cache']).toBe('MISS');
      const etag = miss.headers.etag!;
      expect(etag).toMatch(/^W\//);
      await events.waitFor('store', 1);
      const hit = await rawGet(`${server.url}/doc`);
      expect(hit.headers['x-cache']).toBe('HIT');
      expect(hit.headers.etag).toBe(etag);
      const revalidated = await new Promise<number>((resolve, reject) => {
        http
          .get(`${server.url}/doc`, { headers: { 'if-none-match': etag } }, (res) => {
            res.resume();
            resolve(res.statusCode!);
          })
          .on('error', reject);
      });
      expect(revalidated).toBe(304);
    } finally {
      events.stop();
      await server.close();
    }
  });
});

describe('cacheResponse body capture', () => {
  it('stores the bytes as written even when the app reuses its buffer after each write callback', async () => {
    const app = express();
    app.get(
      '/file',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      (_req, res) => {
        const buf = Buffer.alloc(4);
        const parts = ['AAAA', 'BBBB', 'CCCC'];
        let i = 0;
        res.type('text/plain');
        const next = () => {
          if (i === parts.length) return void res.end();
          buf.write(parts[i++]!);
          res.write(buf, () => next());
        };
        next();
      },
    );
    const server = await listen(app);
    const events = captureEvents('cache');
    try {
      expect((await rawGet(`${server.url}/file`)).body.toString()).toBe('AAAABBBBCCCC');
      await events.waitFor('store', 1);
      const hit = await rawGet(`${server.url}/file`);
      expect(hit.headers['x-cache']).toBe('HIT');
      expect(hit.body.toString()).toBe('AAAABBBBCCCC');
    } finally {
      events.stop();
      await server.close();
    }
  });
});

describe('cacheResponse and trailers', () => {
  it.each([
    ['announced with a Trailer header', true],
    ['added without one', false],
  ])('does not store an answer with trailers (%s): a hit could not send them', async (_name, announced) => {
    const events = captureEvents('cache');
    try {
      const app = express();
      app.get('/sum', cacheResponse({ redis: client, ttl: '1m', logger: quietLogger() }), (_req, res) => {
        res.type('text');
        if (announced) res.setHeader('Trailer', 'X-Checksum');
        res.write('abc');
        res.addTrailers({ 'X-Checksum': 'c0ffee' });
        res.end();
      });
      const server = await listen(app);
      try {
        const first = await raw(`${server.url}/sum`);
        expect([first.body.toString(), first.trailers['x-checksum']]).toEqual(['abc', 'c0ffee']);
        await events.waitFor('uncacheable', 1);
        expect(events.events.find((e) => e.type === 'uncacheable')).toMatchObject({ reason: 'trailers' });
        const second = await raw(`${server.url}/sum`);
        expect([second.headers['x-cache'], second.trailers['x-checksum']]).toEqual(['MISS', 'c0ffee']);
      } finally {
        await server.close();
      }
    } finally {
      events.stop();
    }
  });
});

describe('cacheResponse and the reason phrase', () => {
  it.each([
    [
      'writeHead(200, reason, headers)',
      (res: express.Response) =>
        res.writeHead(200, 'Fine Thanks', { 'Content-Type': 'text/plain' }).end('hello'),
    ],
    [
      'res.statusMessage',
      (res: express.Response) => {
        res.statusMessage = 'Fine Thanks';
        res.type('text').send('hello');
      },
    ],
  ])('a hit sends the one the route chose (%s), as idempotency replays it', async (_name, answer) => {
    const app = express();
    app.get('/hello', cacheResponse({ redis: client, ttl: '1m', logger: quietLogger() }), (_req, res) => {
      answer(res);
    });
    const server = await listen(app);
    try {
      const miss = await raw(`${server.url}/hello`);
      expect([miss.headers['x-cache'], miss.message]).toEqual(['MISS', 'Fine Thanks']);
      let hit = miss;
      for (let i = 0; i < 50 && hit.headers['x-cache'] !== 'HIT'; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        hit = await raw(`${server.url}/hello`);
      }
      expect([hit.headers['x-cache'], hit.message, hit.body.toString()]).toEqual([
        'HIT',
        'Fine Thanks',
        'hello',
      ]);
    } finally {
      await server.close();
    }
  });
});
