import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline, Readable } from 'node:stream';
import express from 'express';
import { cacheResponse } from '../../lib/cache';
import { unsentBudget } from '../../lib/cache/capture';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { eventually, useFlushedClient, useRedisServer } from '../helpers/redis';
import { useServers } from '../idempotency/http';
import { quietLogger, sleep, staleAfter300ms } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

const servers = useServers();
const listen = (app: express.Express) => servers.listen(app);

/** Milliseconds until the response headers arrive (the body is then dropped). */
async function timeToHeaders(url: string, limitMs = 5000): Promise<number> {
  const started = Date.now();
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), limitMs);
  try {
    await fetch(url, { signal: controller.signal });
    return Date.now() - started;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

describe('cacheResponse: answers it will not store never hold up other requests', () => {
  it.each([
    ['text/event-stream', 'data: tick\n\n'],
    ['application/x-ndjson', '{"tick":1}\n'],
    ['application/json-seq', '\u001e{"tick":1}\n'],
  ])(
    'a %s stream in progress does not block other clients of the URL, here or on another instance',
    async (type, line) => {
      const instance = () => {
        const app = express();
        app.use(
          cacheResponse({ redis: client, ttl: '1m', l1: false, lockTimeout: '3s', logger: quietLogger() }),
        );
        app.get('/events', (req, res) => {
          res.setHeader('Content-Type', type);
          res.flushHeaders();
          const tick = setInterval(() => res.write(line), 50);
          req.on('close', () => clearInterval(tick));
        });
        return app;
      };
      const a = await listen(instance());
      const b = await listen(instance());
      const first = new AbortController();
      const open = await fetch(`${a}/events`, { signal: first.signal });
      expect(open.headers.get('x-cache')).toBe('MISS');
      try {
        // Well under lockTimeout (what a blocked client would wait), with room for a loaded machine.
        expect(await timeToHeaders(`${a}/events`)).toBeLessThan(1500);
        expect(await timeToHeaders(`${b}/events`)).toBeLessThan(1500);
      } finally {
        first.abort();
      }
    },
  );

  it('does not store a body that ends short of its Content-Length, so the next client gets the origin, not a truncated hit', async () => {
    const events = captureEvents('cache');
    let runs = 0;
    const app = express();
    app.get(
      '/doc',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      (_req, res) => {
        runs += 1;
        res.setHeader('Content-Type', 'application/octet-stream');
        res.setHeader('Content-Length', '20');
        // The source broke off after 10 of the 20 bytes (a file cut short while it was read).
        res.write('0123456789');
        if (runs === 1) res.end();
        else res.end('abcdefghij');
      },
    );
    const base = await listen(app);
    const truncated = await new Promise<string>((resolve) => {
      const req = httpRequest(`${base}/doc`, (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve('complete'));
        res.on('error', () => resolve('broken'));
        res.on('aborted', () => resolve('broken'));
      });
      req.on('error', () => resolve('broken'));
      // Node waits for the missing bytes: the client gives up, as a browser's timeout would.
      req.setTimeout(500, () => req.destroy());
      req.end();
    });
    expect(truncated).toBe('broken');
    try {
      await events.waitFor('uncacheable', 1);
      expect(events.events).toContainEqual(
        expect.objectContaining({ type: 'uncacheable', reason: 'incomplete' }),
      );
    } finally {
      events.stop();
    }
    const next = await fetch(`${base}/doc`);
    expect(next.headers.get('x-cache')).not.toBe('HIT');
    expect(await next.text()).toBe('0123456789abcdefghij');
    expect(runs).toBe(2);
    // A whole body is stored as usual.
    const hit = await fetch(`${base}/doc`);
    expect(hit.headers.get('x-cache')).toBe('HIT');
    expect(await hit.text()).toBe('0123456789abcdefghij');
  });

  it('a download larger than maxBodySize does not make concurrent downloads wait for it', async () => {
    const app = express();
    app.use(cacheResponse({ redis: client, ttl: '1m', l1: false, maxBodySize: 1000, logger: quietLogger() }));
    app.get('/file', async (_req, res) => {
      res.type('application/octet-stream');
      for (let i = 0; i < 40; i++) {
        res.write(Buffer.alloc(500, i));
        await sleep(50);
      }
      res.end();
    });
    const url = `${await listen(app)}/file`;
    const slow = fetch(url).then((r) => r.arrayBuffer());
    await sleep(150); // the first download is past maxBodySize and still streaming (for about 2 s)
    expect(await timeToHeaders(url)).toBeLessThan(1000);
    expect((await slow).byteLength).toBe(20_000);
  });

  it.each(['res.sendFile', 'a 20 KB preamble, then a pipe'])(
    'a client that never reads its answer does not hold up the fill (%s): it is stored and served to others at once',
    async (how) => {
      const dir = mkdtempSync(join(tmpdir(), 'erk-stall-'));
      const file = join(dir, 'asset.bin');
      writeFileSync(file, Buffer.alloc(200_000, 'a'));
      const size = how === 'res.sendFile' ? 200_000 : 220_000;
      const instance = () => {
        const app = express();
        app.get('/events', (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(': open\n\n');
        });
        app.get(
          '/asset',
          cacheResponse({ redis: client, ttl: '1m', lockTimeout: '3s', logger: quietLogger() }),
          (_req, res) => {
            if (how === 'res.sendFile') return res.sendFile(file);
            // pipe() reads writableNeedDrain before its first write: a full socket paused it at once.
            res.type('application/octet-stream');
            res.write(Buffer.alloc(20_000, 'h'));
            createReadStream(file).pipe(res);
          },
        );
        return app;
      };
      const a = await listen(instance());
      const b = await listen(instance());
      // The answer to /asset can never reach this socket: it waits behind an endless one on the same
      // connection (a client that stops reading does the same once the body outgrows socket buffers).
      const attacker = connect(Number(new URL(a).port), '127.0.0.1');
      try {
        attacker.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\nGET /asset HTTP/1.1\r\nHost: x\r\n\r\n');
        await sleep(300);
        for (const url of [`${a}/asset`, `${b}/asset`]) {
          const started = Date.now();
          const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
          expect((await res.arrayBuffer()).byteLength).toBe(size);
          expect(res.headers.get('x-cache')).toBe('HIT');
          // Before, each waited 3 × lockTimeout (9 s here) and got a MISS.
          expect(Date.now() - started).toBeLessThan(1500);
        }
      } finally {
        attacker.destroy();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it('past the process-wide budget of unsent bytes, stalled clients pace their routes again, and leaving gives it back', async () => {
    const limit = unsentBudget.limit;
    unsentBudget.limit = 256 * 1024;
    const chunk = 16 * 1024;
    // Bytes each stalled answer could write before write() first said "wait" (or all 1 MiB of it).
    const paced: number[] = [];
    const app = express();
    app.get('/events', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': open\n\n');
    });
    app.get(
      '/asset/:n',
      cacheResponse({ redis: client, ttl: '1m', maxBodySize: 4 * 1024 * 1024, logger: quietLogger() }),
      (_req, res) => {
        res.type('application/octet-stream');
        let written = 0;
        while (written < 1024 * 1024) {
          written += chunk;
          if (!res.write(Buffer.alloc(chunk, 'x'))) break;
        }
        paced.push(written);
      },
    );
    const port = Number(new URL(await listen(app)).port);
    // Each answer to /asset waits behind an endless one on its connection: it can never be sent.
    const stalled = (n: number) => {
      const socket = connect(port, '127.0.0.1');
      socket.write(`GET /events HTTP/1.1\r\nHost: x\r\n\r\nGET /asset/${n} HTTP/1.1\r\nHost: x\r\n\r\n`);
      return socket;
    };
    const sockets: ReturnType<typeof connect>[] = [];
    try {
      sockets.push(stalled(1));
      await eventually(() => paced.length === 1, 'the first stalled answer');
      sockets.push(stalled(2));
      await eventually(() => paced.length === 2, 'the second stalled answer');
      // The first runs ahead of its socket until the budget is spent; the second finds little left.
      expect(paced[0]).toBeGreaterThanOrEqual(256 * 1024);
      expect(paced[0]).toBeLessThan(1024 * 1024);
      expect(paced[1]).toBeLessThan(paced[0] ?? 0);
      expect(unsentBudget.used).toBeGreaterThan(0);
      for (const socket of sockets) socket.destroy();
      await eventually(() => unsentBudget.used === 0, 'the budget given back');
    } finally {
      for (const socket of sockets) socket.destroy();
      unsentBudget.limit = limit;
    }
  });

  it('holds back for a cached POST whose body was read (Node closes such a request early)', async () => {
    const total = 16 * 1024 * 1024; // well past what the sockets' buffers take
    let written = 0;
    const app = express();
    app.post(
      '/report',
      cacheResponse({
        redis: client,
        ttl: '1m',
        methods: ['POST'],
        key: () => 'report',
        maxBodySize: 2 * total,
        logger: quietLogger(),
      }),
      express.json(),
      async (_req, res) => {
        // Later than the request's own 'close', which comes just after its body was read.
        await sleep(50);
        res.type('application/octet-stream');
        while (written < total) {
          written += 64 * 1024;
          if (!res.write(Buffer.alloc(64 * 1024, 'r'))) break;
        }
        res.end();
      },
    );
    const port = Number(new URL(await listen(app)).port);
    // A client that sends its request and never reads the answer.
    const socket = connect(port, '127.0.0.1');
    try {
      socket.write(
        'POST /report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}',
      );
      await eventually(() => written > 0, 'the route to write');
      await sleep(100);
      expect(written).toBe(total);
    } finally {
      socket.destroy();
    }
    await eventually(() => unsentBudget.used === 0, 'the budget given back');
  });

  it('a route that writes on after its client left charges nothing to the budget of unsent bytes', async () => {
    const before = unsentBudget.used;
    let done = false;
    const app = express();
    app.use(cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }));
    app.get('/feed', async (_req, res) => {
      res.type('text/plain');
      res.flushHeaders();
      for (let i = 0; i < 10; i++) {
        res.write(Buffer.alloc(500, 'f'));
        await sleep(20);
      }
      res.end();
      done = true;
    });
    await timeToHeaders(`${await listen(app)}/feed`);
    await eventually(() => done, 'the route to finish');
    expect(unsentBudget.used).toBe(before);
  });

  it('requests coalesced behind a stuck origin go to the origin after 3 × lockTimeout instead of waiting for ever', async () => {
    let calls = 0;
    const app = express();
    app.use(cacheResponse({ redis: client, ttl: '1m', l1: false, lockTimeout: 300, logger: quietLogger() }));
    app.get('/r', (_req, res) => {
      calls += 1;
      if (calls === 1) return; // a query that never comes back
      res.json({ calls });
    });
    const url = `${await listen(app)}/r`;
    const stuck = fetch(url).catch(() => undefined);
    await sleep(50);
    const started = Date.now();
    const second = await fetch(url, { signal: AbortSignal.timeout(5000) });
    expect(second.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(3 * 300 + 1000);
    expect(calls).toBe(2);
    void stuck;
  });

  it('a failing origin gets the coalesced requests one at a time, not all at once', async () => {
    let running = 0;
    let peak = 0;
    let calls = 0;
    const app = express();
    app.use(cacheResponse({ redis: client, ttl: '1m', l1: false, lockTimeout: '2s', logger: quietLogger() }));
    app.get('/r', async (_req, res) => {
      calls += 1;
      running += 1;
      peak = Math.max(peak, running);
      await sleep(30);
      running -= 1;
      res.status(503).json({ error: 'down' });
    });
    const url = `${await listen(app)}/r`;
    const answers = await Promise.all(Array.from({ length: 20 }, () => fetch(url).then((r) => r.status)));
    expect(answers.every((s) => s === 503)).toBe(true);
    expect(calls).toBe(20);
    expect(peak).toBe(1);
  });
});

describe('cacheResponse: background refresh of a large piped body', () => {
  it('refreshes a 100 KB res.sendFile answer, stores it and lets the lock go', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'erk-swr-'));
    const file = join(dir, 'big.txt');
    writeFileSync(file, 'x'.repeat(100_000));
    let version = 0;
    const app = express();
    app.get('/file', staleAfter300ms(client), (_req, res) => {
      res.setHeader('X-Version', String(++version));
      res.sendFile(file);
    });
    const url = `${await listen(app)}/file`;
    const events = captureEvents('cache');
    try {
      expect((await fetch(url)).headers.get('x-version')).toBe('1');
      await events.waitFor('store', 1);
      await sleep(400);
      const stale = await fetch(url);
      expect(stale.headers.get('x-cache')).toBe('STALE');
      expect((await stale.arrayBuffer()).byteLength).toBe(100_000);
      await events.waitFor('store', 2);
      expect(version).toBe(2);
      expect(await client.keys('erk:c:*:lock')).toEqual([]);
    } finally {
      events.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('cacheResponse: background refresh of a route that destroys its response', () => {
  it('keeps the stale entry and lets the lock go when the refreshed stream fails (stream.pipeline)', async () => {
    let calls = 0;
    const app = express();
    app.get('/proxied', staleAfter300ms(client), (_req, res) => {
      calls++;
      let sent = false;
      const upstream = new Readable({
        read() {
          // The upstream answers once, then resets: pipeline destroys the response with its error.
          if (calls > 1) return this.destroy(new Error('upstream reset'));
          this.push(sent ? null : 'v1');
          sent = true;
        },
      });
      res.type('text/plain');
      pipeline(upstream, res, () => {});
    });
    const url = `${await listen(app)}/proxied`;
    const events = captureEvents('cache');
    try {
      expect(await (await fetch(url)).text()).toBe('v1');
      await events.waitFor('store', 1);
      await sleep(400);
      const stale = await fetch(url);
      expect([stale.headers.get('x-cache'), await stale.text()]).toEqual(['STALE', 'v1']);
      await eventually(
        async () => calls === 2 && (await client.keys('erk:c:*:lock')).length === 0,
        'the refresh to end',
      );
      const again = await fetch(url);
      expect([again.headers.get('x-cache'), await again.text()]).toEqual(['STALE', 'v1']);
    } finally {
      events.stop();
    }
  });
});

describe('cacheResponse: writeHead with a header list', () => {
  it('replaces headers set before, as Node does, and keeps repeats within the list', async () => {
    const app = express();
    app.use(cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }));
    app.get('/list', (_req, res) => {
      res.setHeader('Content-Type', 'text/html');
      res.setHeader('X-A', 'old');
      res.writeHead(200, ['Content-Type', 'text/plain', 'X-A', 'new', 'X-B', '1', 'X-B', '2']);
      res.end('body');
    });
    const url = `${await listen(app)}/list`;
    const miss = await fetch(url);
    expect(miss.headers.get('content-type')).toBe('text/plain');
    expect(miss.headers.get('x-a')).toBe('new');
    expect(miss.headers.get('x-b')).toBe('1, 2');
    await sleep(50);
    const hit = await fetch(url);
    expect(hit.headers.get('x-cache')).toBe('HIT');
    expect(hit.headers.get('content-type')).toBe('text/plain');
    expect(hit.headers.get('x-a')).toBe('new');
  });
});

describe('cacheResponse: routes whose body depends on the host', () => {
  it("with res.vary('Host'), a forged Host fills only its own variant, never the entry other hosts get", async () => {
    const app = express();
    app.use(cacheResponse({ redis: client, ttl: '1m', l1: { max: 10 }, logger: quietLogger() }));
    app.get('/links', (req, res) => {
      res.vary('Host');
      res.json({ home: `https://${req.get('host')}/` });
    });
    const url = new URL(`${await listen(app)}/links`);
    const get = (host: string) =>
      new Promise<{ cache?: string; body: string }>((resolve, reject) => {
        const req = httpRequest({
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          headers: { Host: host },
        });
        req.on('response', (res) => {
          let body = '';
          res.on('data', (c: Buffer) => {
            body += c;
          });
          res.on('end', () => resolve({ cache: res.headers['x-cache'] as string | undefined, body }));
        });
        req.on('error', reject);
        req.end();
      });
    expect(await get('evil.example')).toEqual({ cache: 'MISS', body: '{"home":"https://evil.example/"}' });
    await sleep(50);
    const shop = await get('shop.example');
    expect(shop.body).toBe('{"home":"https://shop.example/"}');
    await sleep(50);
    expect(await get('shop.example')).toEqual({ cache: 'HIT', body: '{"home":"https://shop.example/"}' });
    expect((await get('evil.example')).body).toBe('{"home":"https://evil.example/"}');
  });
});
