import { request } from 'node:http';
import { connect } from 'node:net';
import type { RequestHandler, Response } from 'express';
import express from 'express';
import { idempotency } from '../../lib/idempotency';
import { redisSession } from '../../lib/session';
import { stepWallClockBack } from '../helpers/clock';
import { captureEvents } from '../helpers/events';
import { useUnhandledRejections } from '../helpers/process';
import { useRedisServer } from '../helpers/redis';
import { postWithSlowBody } from '../helpers/slow-body';
import { freshKey, orderApp, send, sleep, useServers } from './http';

const redisServer = useRedisServer();
const sessionServer = useRedisServer();
const servers = useServers();

let instance = 0;
/** A unique instance name, so a test counts only its own middleware's Redis calls. */
const uniqueName = () => `broken-${process.pid}-${++instance}`;

/** Short lease: the heartbeat beats every 100 ms, so a leftover one shows within a few hundred ms. */
const LOCK_TTL = 300;

/** POSTs with the key and resolves once the connection ends, however it ends, or after `timeoutMs`. */
function postUntilClosed(
  url: string,
  key: string,
  timeoutMs = 5000,
): Promise<{ status?: number; error?: string }> {
  return new Promise((resolve) => {
    const req = request(
      url,
      { method: 'POST', headers: { 'Idempotency-Key': key }, timeout: timeoutMs },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode }));
        res.on('error', (e) => resolve({ status: res.statusCode, error: e.message }));
      },
    );
    req.on('error', (e) => resolve({ error: e.message }));
    req.on('timeout', () => {
      resolve({ error: `no answer within ${timeoutMs} ms` });
      req.destroy();
    });
    req.end();
  });
}

/**
 * After a broken-off response, renewals go on only while the handler keeps writing: once it has been
 * silent for lockTtl they stop, and the named middleware's Redis calls no longer grow.
 */
async function expectRenewalsToStop(events: ReturnType<typeof captureEvents>, name: string) {
  const calls = () => events.events.filter((e) => e.type === 'redis-call' && e.name === name).length;
  await sleep(LOCK_TTL + 150);
  const before = calls();
  await sleep(LOCK_TTL * 1.5);
  expect(calls()).toBe(before);
}

/** POSTs with the key and hangs up as soon as the first body chunk arrives (a client that left). */
function leaveAfterFirstChunk(url: string, key: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'Idempotency-Key': key } }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (e) => (e.message === 'socket hang up' ? undefined : reject(e)));
    req.end();
  });
}

const unhandled = useUnhandledRejections();

describe('idempotency when the response never ends properly', () => {
  it.each([
    [
      'throws after writing part of the body',
      async (res: Response) => {
        res.write('partial ');
        // Express cannot answer after headers went out: it destroys the socket.
        throw new Error('boom after streaming');
      },
    ],
    [
      // On purpose (an upload it refuses mid-stream, an abusive client), before any answer.
      'destroys the response without answering',
      async (res: Response) => {
        res.destroy();
      },
    ],
    [
      // The usual way to refuse an upload mid-stream.
      'destroys the request without answering',
      async (res: Response) => {
        res.req.destroy();
      },
    ],
    [
      'destroys the socket without answering',
      async (res: Response) => {
        res.req.socket.destroy();
      },
    ],
  ])(
    'lets the lease lapse when the handler %s, so a retry after lockTtl runs the handler (not a 409 until ttl)',
    async (_what, firstRun) => {
      const events = captureEvents('idempotency');
      const name = uniqueName();
      let runs = 0;
      const app = orderApp(
        idempotency({ redis: redisServer.client(), lockTtl: LOCK_TTL, name }),
        async (_req, res) => {
          runs += 1;
          if (runs === 1) return firstRun(res);
          res.status(201).json({ run: runs });
        },
      );
      const url = `${await servers.listen(app)}/orders`;
      const key = freshKey('broken');
      try {
        expect((await postUntilClosed(url, key)).error).toBeDefined();
        await events.waitFor('abandoned', 1);
        expect(events.events).toContainEqual(
          expect.objectContaining({ type: 'abandoned', name, reason: 'aborted' }),
        );
        // In flight until lockTtl has passed since: the handler might still be at work.
        expect((await send(url, { key })).status).toBe(409);
        // Silent for longer than lockTtl: no renewal since, so the lease is gone.
        await expectRenewalsToStop(events, name);

        const retry = await send(url, { key });
        expect(retry.status).toBe(201);
        expect(retry.headers.get('idempotent-replayed')).toBeNull();
        expect(runs).toBe(2);
      } finally {
        events.stop();
      }
    },
  );

  it.each(['end', 'reset'] as const)(
    'stores the answer of a handler whose client hung up (%s) before it answered, however long it works, so the retry replays',
    async (hangUp) => {
      let runs = 0;
      let answered!: () => void;
      const done = new Promise<void>((resolve) => {
        answered = resolve;
      });
      const app = orderApp(
        idempotency({ redis: redisServer.client(), lockTtl: LOCK_TTL }),
        async (_req, res) => {
          runs += 1;
          // Past several leases: Node destroys the socket (and the request) when the client leaves,
          // which must not count as the app dropping it.
          await sleep(LOCK_TTL * 4);
          res.status(201).json({ run: runs });
          answered();
        },
      );
      const url = new URL(`${await servers.listen(app)}/orders`);
      const key = freshKey('hung-up');
      const socket = connect(Number(url.port), url.hostname, () => {
        socket.write(
          `POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`,
        );
        setTimeout(() => (hangUp === 'end' ? socket.end() : socket.resetAndDestroy()), 50);
      });
      socket.on('error', () => {});
      await done;
      await sleep(50);
      const retry = await send(url.href, { key });
      expect([retry.status, retry.headers.get('idempotent-replayed'), runs]).toEqual([201, 'true', 1]);
    },
  );

  it('lets the lease of a handler that broke off lapse after lockTtl also when the wall clock steps back meanwhile (NTP)', async () => {
    const events = captureEvents('idempotency');
    const name = uniqueName();
    let runs = 0;
    const app = orderApp(
      idempotency({ redis: redisServer.client(), lockTtl: LOCK_TTL, name }),
      async (_req, res) => {
        runs += 1;
        if (runs === 1) {
          res.destroy();
          return;
        }
        res.status(201).json({ run: runs });
      },
    );
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey('clock');
    let restoreClock = () => {};
    try {
      expect((await postUntilClosed(url, key)).error).toBeDefined();
      await events.waitFor('abandoned', 1);
      restoreClock = stepWallClockBack();
      await expectRenewalsToStop(events, name);
      expect((await send(url, { key })).status).toBe(201);
      expect(runs).toBe(2);
    } finally {
      restoreClock();
      events.stop();
    }
  });

  it('stops the heartbeat once a streaming handler whose client left goes silent, so the key frees after lockTtl, not ttl', async () => {
    const events = captureEvents('idempotency');
    const name = uniqueName();
    let runs = 0;
    const app = orderApp(
      idempotency({ redis: redisServer.client(), lockTtl: LOCK_TTL, name }),
      (_req, res) => {
        runs += 1;
        if (runs > 1) {
          res.type('text').end('complete export\n');
          return;
        }
        res.type('text');
        const rows = setInterval(() => res.write('row\n'), 20);
        // Client gone: stop producing, without end() (the usual streaming pattern).
        res.on('close', () => clearInterval(rows));
      },
    );
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey('stream');
    try {
      await leaveAfterFirstChunk(url, key);
      await events.waitFor('abandoned', 1);
      expect(events.events).toContainEqual(
        expect.objectContaining({ type: 'abandoned', name, reason: 'aborted', status: 200 }),
      );
      // The handler may still be at work: a retry at once must not run it a second time.
      expect((await send(url, { key })).status).toBe(409);
      await expectRenewalsToStop(events, name);

      const retry = await send(url, { key });
      expect(retry.status).toBe(200);
      expect(retry.body.toString()).toBe('complete export\n');
      expect(retry.headers.get('idempotent-replayed')).toBeNull();
      expect(runs).toBe(2);
    } finally {
      events.stop();
    }
  });

  it('keeps renewing while a handler whose client left mid-stream still writes, and stores its answer when it ends', async () => {
    const events = captureEvents('idempotency');
    const name = uniqueName();
    let runs = 0;
    let finished = false;
    const app = orderApp(
      idempotency({ redis: redisServer.client(), lockTtl: LOCK_TTL, name }),
      async (_req, res) => {
        runs += 1;
        res.type('text');
        // An export that outlives several leases and does not notice its client leaving.
        for (let i = 0; i < 15; i++) {
          res.write(`row ${i}\n`);
          await sleep(100);
        }
        res.end('done\n');
        finished = true;
      },
    );
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey('export');
    try {
      await leaveAfterFirstChunk(url, key);
      await events.waitFor('abandoned', 1);
      // Well past lockTtl, the handler is still at work: a retry must not run it alongside.
      await sleep(LOCK_TTL * 2);
      expect(finished).toBe(false);
      expect((await send(url, { key })).status).toBe(409);
      await events.waitFor('stored', 1);
      const retry = await send(url, { key });
      expect(retry.status).toBe(200);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(retry.body.toString()).toBe(
        `${Array.from({ length: 15 }, (_, i) => `row ${i}\n`).join('')}done\n`,
      );
      expect(runs).toBe(1);
    } finally {
      events.stop();
    }
  });

  it('keeps the key reserved when the client disconnects before any answer, and stores the answer for the retry', async () => {
    const events = captureEvents('idempotency');
    const name = uniqueName();
    let runs = 0;
    let finishOrder: () => void = () => {};
    const orderPlaced = new Promise<void>((resolve) => {
      finishOrder = resolve;
    });
    let clientGone: () => void = () => {};
    const disconnected = new Promise<void>((resolve) => {
      clientGone = resolve;
    });
    const app = orderApp(idempotency({ redis: redisServer.client(), name }), async (req, res) => {
      runs += 1;
      req.socket.once('close', clientGone);
      await orderPlaced;
      res.status(201).json({ order: 7 });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey('early');
    try {
      const req = request(url, { method: 'POST', headers: { 'Idempotency-Key': key } });
      req.on('error', () => {});
      req.end();
      await events.waitFor('first', 1);
      req.destroy();
      await disconnected;

      // The handler is still placing the order: running it again now would place a second one.
      expect((await send(url, { key })).status).toBe(409);
      finishOrder();
      await events.waitFor('stored', 1);
      const retry = await send(url, { key });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(runs).toBe(1);
      expect(events.count('released')).toBe(0);
    } finally {
      finishOrder();
      events.stop();
    }
  });
});

describe('idempotency when the handler ends the response with something Node refuses', () => {
  it.each(['throws', 'calls next(error)'])(
    'a handler that answers, then %s while the body still arrives, keeps its answer and the process',
    async (how) => {
      const redis = redisServer.client();
      const app = express();
      app.post('/up', idempotency({ redis }), (_req, res, next) => {
        res.status(201).json({ ok: true });
        const error = new Error('after the answer');
        if (how === 'throws') throw error;
        next(error);
      });
      const url = new URL(await servers.listen(app));
      const key = freshKey();
      // The body comes in two parts: Express's final handler waits for the rest before answering.
      const head = await postWithSlowBody(url, '/up', { 'Idempotency-Key': key }, 300, 700);
      expect(head.split('\r\n')[0]).toBe('HTTP/1.1 201 Created');
      expect(head).toContain('{"ok":true}');
      expect(head).not.toContain('after the answer');
      const retry = await fetch(`${url.origin}/up`, {
        method: 'POST',
        headers: { 'Idempotency-Key': key, 'Content-Type': 'application/octet-stream' },
        body: '1234567890',
      });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
    },
  );

  it('does not store the answer to an upload the client broke off, so its retry runs the handler', async () => {
    const events = captureEvents('idempotency');
    let runs = 0;
    const app = express();
    // The body is read after the middleware, as with a streaming upload handler.
    app.post('/orders', idempotency({ redis: redisServer.client() }), express.json(), (req, res) => {
      runs += 1;
      res.status(201).json({ created: req.body });
    });
    const url = new URL(await servers.listen(app));
    const key = freshKey();
    const body = JSON.stringify({ amount: 10 });
    try {
      await new Promise<void>((resolve, reject) => {
        const socket = connect(Number(url.port), url.hostname, () => {
          socket.write(
            `POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`,
          );
          setTimeout(() => {
            socket.destroy(); // the network drops mid-upload
            resolve();
          }, 200);
        });
        socket.on('error', reject);
      });
      await events.waitFor('released', 1);
      expect(events.events.find((e) => e.type === 'released')).toMatchObject({ reason: 'request-aborted' });
      const retry = await send(`${url.origin}/orders`, { key, body });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBeNull();
      expect(JSON.parse(retry.body.toString())).toEqual({ created: { amount: 10 } });
      expect(runs).toBe(1);
    } finally {
      events.stop();
    }
  });

  it('under redisSession (mounted in front), a session commit that fails still answers: its 500 is not dropped, and the retry gets the stored answer', async () => {
    const redis = redisServer.client();
    const sessions = redisSession({ redis, secret: 'broken-responses-secret-broken-0001' });
    const app = express();
    let runs = 0;
    app.use(express.json());
    app.use(sessions);
    app.post('/orders', idempotency({ redis }), (req, res) => {
      runs++;
      (req.session as unknown as { last: bigint }).last = 10n; // JSON cannot encode it
      res.status(201).json({ ok: true });
    });
    app.use(sessions.handleErrors);
    const url = await servers.listen(app);
    const key = freshKey();
    const answer = await send(`${url}/orders`, { key, body: {}, timeoutMs: 3000 });
    expect(answer.status).toBe(500);
    expect(answer.body.toString()).toContain('session-error');
    // The order was made once; its retry is told so rather than making it again (README).
    const retry = await send(`${url}/orders`, { key, body: {}, timeoutMs: 3000 });
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });

  it('under redisSession, a handler that answers and then throws while the body arrives sends the answer it stored', async () => {
    // Sessions on their own server, whose writes are slow: the session save is still pending when
    // the rest of the body arrives and Express's final handler answers the throw.
    const sessions = redisSession({
      redis: sessionServer.client(),
      secret: 'broken-responses-secret-broken-0001',
    });
    const app = express();
    app.use(sessions);
    app.post('/orders', idempotency({ redis: redisServer.client() }), async (req, res) => {
      (req.session as unknown as { last: string }).last = 'order';
      await sessionServer.plain().call('CLIENT', 'PAUSE', '300', 'WRITE');
      res.status(201).json({ created: true });
      throw new Error('a bug after answering');
    });
    const url = new URL(await servers.listen(app));
    const key = freshKey();
    const head = await postWithSlowBody(url, '/orders', { 'Idempotency-Key': key }, 100, 1000);
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 201 Created');
    expect(head).toContain('{"created":true}');
    const retry = await fetch(`${url.origin}/orders`, {
      method: 'POST',
      headers: { 'Idempotency-Key': key, 'Content-Type': 'application/octet-stream' },
      body: '1234567890',
    });
    expect([retry.status, retry.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
  });

  it('res.end(42) gets the same 500 as without the kit, releases the key and leaves no unhandled rejection', async () => {
    const events = captureEvents('idempotency');
    const name = uniqueName();
    let runs = 0;
    const handler: RequestHandler = (_req, res) => {
      runs += 1;
      if (runs === 1) res.status(201).end(42 as unknown as string);
      else res.status(201).json({ run: runs });
    };
    const bare = `${await servers.listen(orderApp((_req, _res, next) => next(), handler))}/orders`;
    const url = `${await servers.listen(orderApp(idempotency({ redis: redisServer.client(), name }), handler))}/orders`;
    const key = freshKey('number');
    try {
      const withoutKit = await send(bare, { key, headers: { Accept: 'text/plain' } });
      expect(withoutKit.status).toBe(500);

      runs = 0;
      const first = await send(url, { key, headers: { Accept: 'text/plain' }, timeoutMs: 3000 });
      expect(first.status).toBe(500);
      expect(first.headers.get('content-type')).toBe(withoutKit.headers.get('content-type'));
      expect(events.events).toContainEqual(
        expect.objectContaining({ type: 'released', name, status: 500, reason: 'status' }),
      );

      const retry = await send(url, { key });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBeNull();
      expect(runs).toBe(2);
      expect(unhandled).toEqual([]);
    } finally {
      events.stop();
    }
  });

  it('a throw from the deferred end() (unknown encoding) ends the connection instead of hanging, and releases the key', async () => {
    const events = captureEvents('idempotency');
    const name = uniqueName();
    let runs = 0;
    const app = orderApp(idempotency({ redis: redisServer.client(), name }), (_req, res) => {
      runs += 1;
      if (runs === 1) res.status(201).end('text', 'no-such-encoding' as BufferEncoding);
      else res.status(201).json({ run: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const key = freshKey('encoding');
    try {
      const first = await postUntilClosed(url, key, 3000);
      expect(first.error).toMatch(/socket hang up|ECONNRESET|aborted/);
      expect(events.events).toContainEqual(
        expect.objectContaining({ type: 'released', name, reason: 'unreadable' }),
      );
      const retry = await send(url, { key });
      expect(retry.status).toBe(201);
      expect(runs).toBe(2);
      expect(unhandled).toEqual([]);
    } finally {
      events.stop();
    }
  });
});
