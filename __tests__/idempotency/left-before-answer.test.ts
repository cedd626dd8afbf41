import { createReadStream, createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import compression from 'compression';
import express5, { type RequestHandler, type Response } from 'express';
import type { RedisClient } from '../../lib/client';
import { idempotency } from '../../lib/idempotency';
import { eventually, useRedisServer } from '../helpers/redis';
import { useSlowKitClients } from '../helpers/tcp-proxy';
import { freshKey, send, sleep, useEvents, useServers } from './http';

// A client that leaves before any answer keeps the key in flight while the handler works (its
// answer is stored for the retry). An answer the handler then starts and cannot end, or an upload
// that can never complete, must not hold the key until `ttl` (24 h by default): lockTtl after its
// last sign of life, the retry runs.
const express4 = require('express4') as typeof express5;
const redis = useRedisServer();
const servers = useServers();
const events = useEvents();
const dir = mkdtempSync(join(tmpdir(), 'erk-left-'));
const file = join(dir, 'export.csv');
writeFileSync(file, 'id,amount\n'.repeat(1000));
// Larger than a response's 16 KiB buffer: sent to a gone client, it never ends.
const bigFile = join(dir, 'export.bin');
writeFileSync(bigFile, Buffer.alloc(200_000, 'x'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const slowClient = useSlowKitClients(() => redis.server.port);
/** Opened by the handler once it has started: `opened` resolves then. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}
const idem = (extra = {}) => idempotency({ redis: redis.client(), lockTtl: 300, ...extra });

describe.each([
  ['5', express5],
  ['4', express4],
])('Express %s: the client left, then the handler answers with a file or a stream', (_version, express) => {
  it.each<[string, (res: Response) => void]>([
    ['sendFile', (res) => res.sendFile(file)],
    ['download', (res) => res.download(file)],
    ['a piped stream', (res) => void createReadStream(file).pipe(res)],
  ])('%s: the retry runs once lockTtl has passed', async (_how, answer) => {
    let runs = 0;
    const first = gate();
    const app = express();
    app.post('/exports', idem(), async (_req, res) => {
      if (++runs === 1) {
        first.open();
        await sleep(200);
      }
      answer(res);
    });
    const url = `${await servers.listen(app)}/exports`;
    const key = freshKey();
    const req = request(url, { method: 'POST', headers: { 'Idempotency-Key': key } });
    req.on('error', () => {});
    req.end();
    await first.opened;
    req.destroy(); // the client's timeout
    await sleep(1000); // the handler started its answer 800 ms ago: well past lockTtl (300 ms)
    expect((await send(url, { key })).status).toBe(200);
    expect(runs).toBe(2);
  });
});

describe('the client left while the reservation was on its way to Redis, then a file is sent', () => {
  /** Writes `head` on a new connection to `url` and destroys it `afterMs` later. */
  function sendAndLeave(url: URL, head: string, afterMs: number) {
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.write(head);
      setTimeout(() => socket.destroy(), afterMs);
    });
    socket.on('error', () => {});
  }
  /** POST /exports behind idempotency(): the handler answers with a file 50 ms after it starts. */
  function exportsApp(client: RedisClient, counter: { runs: number }) {
    const app = express5();
    app.get('/slow', (_req, res) => {
      setTimeout(() => res.end('slow'), 3000);
    });
    app.post('/exports', idempotency({ redis: client, lockTtl: 300 }), (_req, res) => {
      counter.runs += 1;
      // An answer that cannot end once the client is gone (Express drops sendFile's ECONNABORTED).
      setTimeout(() => res.sendFile(bigFile), 50);
    });
    return app;
  }
  const post = (key: string) =>
    `POST /exports HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`;

  it('the retry runs once lockTtl has passed (not after ttl)', async () => {
    // Replies take 50 ms: the client is gone before the reservation answers, so the response's
    // 'close' came before the kit could listen for it.
    const counter = { runs: 0 };
    const url = new URL(await servers.listen(exportsApp(await slowClient(), counter)));
    const key = freshKey();
    sendAndLeave(url, post(key), 5);
    await eventually(() => counter.runs === 1, 'the handler to run for the request whose client left');
    await sleep(1000); // well past lockTtl (300 ms) after the handler's last sign of life
    expect((await send(`${url.origin}/exports`, { key })).status).toBe(200);
    expect(counter.runs).toBe(2);
  });

  // Pipelined behind a slow GET, the POST's response is queued: when the connection dies it gets no
  // 'close', and `res.destroyed` stays false.
  it.each([
    ['while the reservation was on its way (Redis replies delayed 50 ms)', 50],
    ['(no delay: the reservation answered first)', 0],
  ])('pipelined, the client left %s: the retry runs once lockTtl has passed', async (_what, delayMs) => {
    const counter = { runs: 0 };
    // The retry goes to a second instance on a direct client (records are shared through Redis).
    const first = new URL(await servers.listen(exportsApp(await slowClient(delayMs), counter)));
    const second = new URL(await servers.listen(exportsApp(redis.client(), counter)));
    const key = freshKey();
    sendAndLeave(first, `GET /slow HTTP/1.1\r\nHost: x\r\n\r\n${post(key)}`, delayMs > 0 ? 5 : 30);
    await eventually(() => counter.runs === 1, 'the handler to run for the request whose client left');
    await sleep(1500); // the file was sent 1.4 s ago: well past lockTtl (300 ms)
    const retry = await send(`${second.origin}/exports`, { key });
    expect({ status: retry.status, runs: counter.runs }).toEqual({ status: 200, runs: 2 });
  });
});

describe.each<[string, boolean, RequestHandler]>([
  [
    'reads it with data/end',
    true,
    (req, res) => {
      req.on('data', () => {});
      req.on('end', () => res.status(201).end());
    },
  ],
  [
    'pipes it to a file',
    false,
    (req, res) => {
      const out = createWriteStream(join(dir, String(Math.random())));
      req.pipe(out);
      out.on('finish', () => res.status(201).end());
    },
  ],
])('an upload broken off mid-body, whose handler %s', (_how, chunked, handler) => {
  it('frees the key once lockTtl has passed', async () => {
    const app = express5();
    app.post('/up', idem({ fingerprint: () => 'upload' }), handler);
    const url = new URL(await servers.listen(app));
    const key = freshKey();
    const socket = connect(Number(url.port), url.hostname);
    socket.on('error', () => {});
    const framing = chunked
      ? 'Transfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n'
      : 'Content-Length: 10\r\n\r\n12345';
    socket.write(`POST /up HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\n${framing}`);
    await sleep(150);
    socket.destroy();
    await sleep(800);
    const retry = await fetch(`${url.origin}/up`, {
      method: 'POST',
      headers: { 'Idempotency-Key': key },
      body: '1234567890',
    });
    expect(retry.status).toBe(201);
  });
});

describe('the client left, then the handler answers in a way it can end', () => {
  /** Sends a request with `key` and leaves once the handler has started. */
  async function leaveEarly(url: string, key: string, started: Promise<void>) {
    const req = request(url, { method: 'POST', headers: { 'Idempotency-Key': key } });
    req.on('error', () => {});
    req.end();
    await started;
    req.destroy();
  }

  it.each<[string, (res: Response) => void, (res: Response) => void]>([
    ['headers', (res) => res.writeHead(201, { 'Content-Type': 'application/json' }), (res) => res.end('{}')],
    [
      'a first chunk',
      (res) => {
        res.status(200).type('json');
        res.write('[');
      },
      (res) => res.end(']'),
    ],
  ])(
    '%s, slow work, then end(): the key stays reserved, so no second run alongside',
    async (_how, begin, finish) => {
      const first = gate();
      let runs = 0;
      let running = 0;
      let most = 0;
      const app = express5();
      app.post('/y', idem({ fingerprint: () => 'same' }), async (_req, res) => {
        runs++;
        running++;
        most = Math.max(most, running);
        if (runs === 1) {
          first.open();
          await sleep(200);
        }
        begin(res);
        await sleep(1000); // longer than lockTtl (300 ms), with no write
        running--;
        finish(res);
      });
      const url = `${await servers.listen(app)}/y`;
      const key = freshKey();
      await leaveEarly(url, key, first.opened);
      await sleep(800);
      const retry = await send(url, { key });
      await sleep(800);
      expect([retry.status, most]).toEqual([409, 1]);
    },
  );

  it('sendFile whose callback answers the error: stored for the retry, not reported abandoned', async () => {
    const first = gate();
    let runs = 0;
    const app = express5();
    app.post('/f', idem({ fingerprint: () => 'same' }), async (_req, res) => {
      runs++;
      first.open();
      await sleep(200);
      res.sendFile(file, (error) => {
        if (error) res.status(404).json({ error: 'gone' });
      });
    });
    const url = `${await servers.listen(app)}/f`;
    const key = freshKey();
    await leaveEarly(url, key, first.opened);
    await sleep(700);
    expect([(await send(url, { key })).status, runs]).toEqual([404, 1]);
    expect(events.types()).not.toContain('abandoned');
  });

  it('res.json() through compression mounted after: stored for the retry, not reported abandoned', async () => {
    const first = gate();
    let runs = 0;
    const app = express5();
    app.post('/x', idem({ fingerprint: () => 'same' }), compression({ threshold: 0 }), async (_req, res) => {
      runs++;
      first.open();
      await sleep(300);
      res.status(201).json({ n: runs });
    });
    const url = `${await servers.listen(app)}/x`;
    const key = freshKey();
    await leaveEarly(url, key, first.opened);
    await sleep(700);
    const retry = await send(url, { key });
    expect([retry.status, runs]).toEqual([201, 1]);
    expect(events.types()).not.toContain('abandoned');
  });
});

describe('a neighbour on the connection ends it', () => {
  it('pipelined behind a request whose handler destroys the connection: the one still at work keeps its key (409) and runs once', async () => {
    let runs = 0;
    let ended = 0;
    const app = express5();
    app.get('/stream', (_req, res, next) => {
      res.write('partial');
      setTimeout(() => next(new Error('the stream failed')), 100);
    });
    app.post('/orders', idempotency({ redis: redis.client(), lockTtl: 300 }), (_req, res) => {
      runs += 1;
      setTimeout(() => {
        ended += 1;
        res.status(201).json({ run: runs });
      }, 2000);
    });
    const url = new URL(await servers.listen(app));
    const key = freshKey();
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.write(
        'GET /stream HTTP/1.1\r\nHost: x\r\n\r\n' +
          `POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`,
      );
    });
    socket.on('error', () => {});
    socket.resume();
    await eventually(() => runs === 1, 'the first run');
    await sleep(1000); // the connection died 0.9 s ago; the handler has 1 s to go
    const retry = await send(`${url.origin}/orders`, { key, timeoutMs: 5000 });
    expect({ retry: retry.status, runs, ended, events: events.types() }).toEqual({
      retry: 409,
      runs: 1,
      ended: 0,
      events: expect.not.arrayContaining(['abandoned']),
    });
  });

  it('ahead of an idempotent request whose own handler destroys the connection: the one still at work keeps its key (409) and runs once', async () => {
    let runs = 0;
    const app = express5();
    app.post('/orders', idempotency({ redis: redis.client(), lockTtl: 300 }), (_req, res) => {
      runs += 1;
      setTimeout(() => res.status(201).json({ run: runs }), 2000);
    });
    // Refuses the second request outright. (A neighbour not behind idempotency() leaves no trace of
    // whose destroy it was: see the README's lifecycle.)
    app.post('/refuse', idempotency({ redis: redis.client(), lockTtl: 300 }), (req) => {
      setTimeout(() => req.socket.destroy(), 100);
    });
    const url = new URL(await servers.listen(app));
    const key = freshKey();
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.write(
        `POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n` +
          `POST /refuse HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${freshKey()}\r\nContent-Length: 0\r\n\r\n`,
      );
    });
    socket.on('error', () => {});
    socket.resume();
    await eventually(() => runs === 1, 'the first run');
    await sleep(1000);
    const retry = await send(`${url.origin}/orders`, { key, timeoutMs: 5000 });
    expect({ retry: retry.status, runs }).toEqual({ retry: 409, runs: 1 });
  });

  it('queued behind another, its own handler drops the connection (req.socket.destroy()): the key frees after lockTtl', async () => {
    let runs = 0;
    const app = express5();
    app.get('/slow', (_req, res) => {
      setTimeout(() => res.end('slow'), 3000);
    });
    app.post('/orders', idempotency({ redis: redis.client(), lockTtl: 300 }), (req) => {
      runs += 1;
      setTimeout(() => req.socket.destroy(), 50);
    });
    const url = new URL(await servers.listen(app));
    const key = freshKey();
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.write(
        'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n' +
          `POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`,
      );
    });
    socket.on('error', () => {});
    socket.resume();
    await eventually(() => runs === 1, 'the first run');
    await sleep(1200); // well past lockTtl (300 ms)
    const app2 = express5();
    app2.post('/orders', idempotency({ redis: redis.client(), lockTtl: 300 }), (_req, res) => {
      runs += 1;
      res.status(201).json({ ok: 1 });
    });
    const url2 = new URL(await servers.listen(app2));
    const retry = await send(`${url2.origin}/orders`, { key, timeoutMs: 5000 });
    expect({ retry: retry.status, runs }).toEqual({ retry: 201, runs: 2 });
  });

  /** A POST whose body comes `bodyAfterMs` after its head, on its own connection. */
  function postLate(url: URL, key: string, body: string, bodyAfterMs: number) {
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.write(
        `POST /o HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Length: ${body.length}\r\n\r\n`,
      );
      if (body) setTimeout(() => socket.write(body), bodyAfterMs);
    });
    socket.on('error', () => {});
    socket.resume();
    return socket;
  }

  it.each<[string, (app: ReturnType<typeof express5>, counter: { runs: number }) => void, string]>([
    [
      "the handler, on its request's 'end' (an event Node fires outside the handler's context)",
      (app, counter) =>
        app.post('/o', idempotency({ redis: redis.client(), lockTtl: 300 }), (req, res) => {
          counter.runs += 1;
          if (counter.runs > 1) return void res.status(201).end('ok');
          req.on('data', () => {});
          req.on('end', () => req.socket.destroy());
        }),
      '0123456789',
    ],
    [
      'a guard in front of idempotency(), from its own timer',
      (app, counter) => {
        app.use((req, res, next) => {
          const timer = setTimeout(() => req.socket.destroy(), 100);
          res.on('finish', () => clearTimeout(timer));
          next();
        });
        app.post('/o', idempotency({ redis: redis.client(), lockTtl: 300 }), (_req, res) => {
          counter.runs += 1;
          if (counter.runs > 1) res.status(201).end('ok');
        });
      },
      '',
    ],
  ])('dropped by %s: the key frees after lockTtl', async (_who, mount, body) => {
    const counter = { runs: 0 };
    const app = express5();
    mount(app, counter);
    const url = new URL(await servers.listen(app));
    const key = freshKey();
    const socket = postLate(url, key, body, 100);
    await eventually(
      () => counter.runs === 1 && socket.destroyed,
      'the first run, and the connection dropped',
    );
    await sleep(1000); // well past lockTtl (300 ms)
    const retry = await send(`${url.origin}/o`, { key, body: body || undefined, timeoutMs: 3000 });
    expect({ retry: retry.status, runs: counter.runs }).toEqual({ retry: 201, runs: 2 });
  });
});
