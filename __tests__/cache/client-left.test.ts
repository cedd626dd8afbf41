import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { cacheResponse } from '../../lib/cache';
import { eventually, useRedisServer } from '../helpers/redis';
import { useSlowKitClients } from '../helpers/tcp-proxy';
import { listen, quietLogger, sleep } from './helpers';

// A client that hangs up while the kit's lookup is still on its way to Redis: the response's 'close'
// has come and gone by the time the fill starts, and must not leave the fill open for good.
const redis = useRedisServer();
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** Sends `head` and hangs up `afterMs` later, before the kit's Redis call has answered. */
function hangUp(port: number, head: string, afterMs = 5): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(head);
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, afterMs);
    });
    socket.on('error', () => resolve());
  });
}

const slowClient = useSlowKitClients(() => redis.server.port);

it('a miss whose client hung up during the lookup lets go of its fill lock: the next request fills at once', async () => {
  // Replies take 50 ms: the client is gone before the lookup (which takes the fill lock) answers.
  const client = await slowClient();
  let runs = 0;
  const app = express();
  app.get(
    '/x',
    cacheResponse({ redis: client, ttl: '1m', lockTimeout: '1s', logger: quietLogger() }),
    (_req, res) => {
      runs += 1;
      res.json({ runs });
    },
  );
  const server = await listen(app);
  cleanups.push(server.close);
  const port = Number(new URL(server.url).port);
  await hangUp(port, 'GET /x HTTP/1.1\r\nHost: x\r\n\r\n');
  await eventually(() => runs === 1, 'the route to run for the request whose client left');
  const admin = redis.plain();
  // Before: the lock was renewed for as long as the process lived.
  await eventually(async () => (await admin.keys('erk:*:lock')).length === 0, 'the fill lock to go', 1500);
  await sleep(1200); // past lockTimeout: a lock still renewed would show by now
  expect(await admin.keys('erk:*:lock')).toEqual([]);
  const started = performance.now();
  const res = await fetch(`${server.url}/x`);
  expect(await res.json()).toEqual({ runs: 2 });
  expect(res.headers.get('x-cache')).toBe('MISS');
  // Not 3 × lockTimeout (3 s) behind the first request's flight.
  expect(performance.now() - started).toBeLessThan(1500);
});

// Pipelined: a response queued behind another on its connection gets neither 'close' nor `destroyed`
// when that connection dies (Node destroys only the requests), and a streamed answer then stalls on a
// response with no socket.
const dir = mkdtempSync(join(tmpdir(), 'erk-probe-'));
const file = join(dir, 'asset.bin');
writeFileSync(file, Buffer.alloc(200_000, 'a'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('a pipelined miss whose client hung up during the lookup lets go of its fill lock (res.sendFile)', async () => {
  const client = await slowClient();
  let runs = 0;
  const app = express();
  app.get('/slow', (_req, res) => {
    setTimeout(() => res.end('slow'), 500);
  });
  app.get(
    '/asset',
    cacheResponse({ redis: client, ttl: '1m', lockTimeout: '1s', logger: quietLogger() }),
    (_req, res) => {
      runs += 1;
      res.sendFile(file);
    },
  );
  const server = await listen(app);
  cleanups.push(server.close);
  const port = Number(new URL(server.url).port);
  const socket = connect(port, '127.0.0.1', () => {
    socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /asset HTTP/1.1\r\nHost: x\r\n\r\n');
    setTimeout(() => socket.destroy(), 5);
  });
  socket.on('error', () => {});
  await eventually(() => runs === 1, 'the route to run for the pipelined request whose client left');
  const admin = redis.plain();
  await sleep(2000); // two lockTimeouts: a lock not renewed would be gone
  const locks = await admin.keys('erk:*:lock');
  const started = performance.now();
  const res = await fetch(`${server.url}/asset`);
  await res.arrayBuffer();
  const waited = performance.now() - started;
  // `slowMs`: how long the request waited, when it waited 1.5 s or more (on the open flight).
  const slowMs = waited >= 1500 ? Math.round(waited) : false;
  expect({ locks, slowMs }).toEqual({ locks: [], slowMs: false });
}, 20_000);

it('a pipelined conditional miss the route answers 304 itself, whose connection died while it was queued, ends its flight', async () => {
  // No proxy: nothing needs to be slow. The route's own 304 (Express's fresh check) waits for the
  // response's end (onFinished in fill.ts) before it ends the flight; a queued response whose
  // connection died never finishes, so the flight stays open for the life of the process.
  const client = redis.client();
  let runs = 0;
  const app = express();
  app.get('/slow', (_req, res) => {
    setTimeout(() => res.end('slow'), 300);
  });
  app.get(
    '/page',
    cacheResponse({ redis: client, ttl: '1m', lockTimeout: '500ms', l1: false, logger: quietLogger() }),
    (_req, res) => {
      runs += 1;
      setTimeout(() => res.send('hello'), 50);
    },
  );
  const server = await listen(app);
  cleanups.push(server.close);
  const port = Number(new URL(server.url).port);
  const etag = require('etag')(Buffer.from('hello'), { weak: true }) as string;
  const socket = connect(port, '127.0.0.1', () => {
    socket.write(
      'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n' +
        `GET /page HTTP/1.1\r\nHost: x\r\nIf-None-Match: ${etag}\r\n\r\n`,
    );
    setTimeout(() => socket.destroy(), 20);
  });
  socket.on('error', () => {});
  await eventually(() => runs === 1, 'the route to run for the queued request');
  await sleep(1500); // the lock (500 ms, no longer renewed) is gone by now
  const timings: number[] = [];
  for (let i = 0; i < 2; i++) {
    const started = performance.now();
    await (await fetch(`${server.url}/page`)).text();
    timings.push(Math.round(performance.now() - started));
  }
  // Before: each waited 3 × lockTimeout (1.5 s) on the open flight, then goes uncached.
  expect({ timings, under750: timings.every((ms) => ms < 750) }).toEqual({ timings, under750: true });
}, 20_000);
