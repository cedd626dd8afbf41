import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { cacheResponse } from '../../lib/cache';
import { useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

const redis = useRedisServer();

/** Sends one raw GET with `target` as the request line's target (supertest cannot send absolute form). */
function rawGet(port: number, target: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let out = '';
    socket.on('data', (d) => {
      out += d;
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(out));
    socket.write(`GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
  });
}

describe('cacheResponse and request lines in absolute form (GET http://host/path)', () => {
  it('keys them by path and query, as Express routes them: made-up hosts share one entry and one origin run', async () => {
    const client = redis.client();
    await client.flushall();
    let runs = 0;
    const cache = cacheResponse({ redis: client, ttl: '5m', query: ['page'], logger: quietLogger() });
    const app = express();
    app.get('/api/products/:id', cache, (req, res) => {
      runs += 1;
      res.json({ id: req.params.id });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as AddressInfo;
    try {
      const first = await rawGet(port, '/api/products/42');
      expect(first).toMatch(/X-Cache: MISS/i);
      await new Promise((r) => setTimeout(r, 100));
      const answers: string[] = [];
      for (let i = 0; i < 5; i++) answers.push(await rawGet(port, `http://cb${i}.example/api/products/42`));
      const other = await rawGet(port, 'http://cb9.example/api/products/42?cb=1');
      const entries = (await client.keys('erk:c:*')).filter((k) => !/:(lock|nostore|inv)$/.test(k));
      expect({
        hits: answers.filter((a) => /X-Cache: HIT/i.test(a)).length,
        bypass: /X-Cache: BYPASS/i.test(other),
        runs,
        entries: entries.length,
        keyOf: cache.keyOf({ method: 'GET', originalUrl: 'http://x.example?page=2', url: '/' } as never),
      }).toEqual({ hits: 5, bypass: true, runs: 2, entries: 1, keyOf: 'GET /?page=2' });
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await cache.cache.close();
    }
  });

  it.each(['javascript://h/p', 'http://h%41/p', 'http://h;x/p'])(
    '%s is keyed by the path Express serves for it, so it can never put that answer under GET /p',
    async (target) => {
      const client = redis.client();
      await client.flushall();
      const root = mkdtempSync(join(tmpdir(), 'erk-absolute-'));
      writeFileSync(join(root, 'p'), 'the real /p');
      for (const dir of ['h', 'A', ';x']) {
        mkdirSync(join(root, dir));
        writeFileSync(join(root, dir, 'p'), `${dir}/p, not /p`);
      }
      const cache = cacheResponse({ redis: client, ttl: '5m', logger: quietLogger() });
      const app = express();
      app.use(cache, express.static(root));
      const server = app.listen(0, '127.0.0.1');
      await new Promise((r) => server.once('listening', r));
      const { port } = server.address() as AddressInfo;
      try {
        await rawGet(port, target);
        await new Promise((r) => setTimeout(r, 200));
        const plain = await rawGet(port, '/p');
        expect(plain.split('\r\n\r\n')[1]).toBe('the real /p');
      } finally {
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
        await cache.cache.close();
        rmSync(root, { recursive: true, force: true });
      }
    },
  );
});
