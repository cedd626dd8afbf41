import { mkdtempSync, rmSync } from 'node:fs';
import { request, type Server } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express, { type RequestHandler } from 'express';
import { idempotency } from '../../lib/idempotency';
import { useRedisServer } from '../helpers/redis';
import { freshKey, orderApp, send, sleep, useEvents, useServers } from './http';

const redis = useRedisServer();
const servers = useServers();
const events = useEvents();

/** POSTs a keyed JSON body over a Unix socket, as a reverse proxy in front would. */
function postOverSocket(
  socketPath: string,
  key: string,
  forwardedFor: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ amount: 10 });
    const req = request(
      {
        socketPath,
        path: '/orders',
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'Idempotency-Key': key,
          'X-Forwarded-For': forwardedFor,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('idempotency when nothing tells the caller apart', () => {
  it('does not run the handler for a client that hung up before idempotency() ran, so its retry is the first run', async () => {
    let runs = 0;
    const app = express();
    app.use(express.json());
    // A slow lookup in front (auth, session): the client gives up while it runs.
    app.use(async (_req, _res, next) => {
      await sleep(300);
      next();
    });
    app.post('/orders', idempotency({ redis: redis.client() }), (_req, res) => {
      runs += 1;
      res.status(201).json({ runs });
    });
    const base = await servers.listen(app);
    const key = freshKey('gone');
    const body = JSON.stringify({ amount: 10 });
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(
      `POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nIdempotency-Key: ${key}\r\n\r\n${body}`,
    );
    await sleep(100);
    socket.destroy();
    await sleep(500);
    expect(runs).toBe(0);
    expect(events.types()).toContain('caller-gone');

    const retry = await send(`${base}/orders`, { key, body: { amount: 10 } });
    expect(retry.status).toBe(201);
    expect(retry.json()).toEqual({ runs: 1 });
    const again = await send(`${base}/orders`, { key, body: { amount: 10 } });
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });

  describe('an app on a Unix socket whose "trust proxy" does not trust the proxy', () => {
    let dir: string;
    let server: Server | undefined;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'erk-idem-'));
    });
    afterEach(async () => {
      if (server) {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server?.close(() => resolve()));
        server = undefined;
      }
      rmSync(dir, { recursive: true, force: true });
    });

    async function listenOnSocket(middleware: RequestHandler, handler: RequestHandler): Promise<string> {
      const app = orderApp(middleware, handler);
      app.set('trust proxy', 'loopback');
      const path = join(dir, 'app.sock');
      server = app.listen(path);
      await new Promise<void>((resolve) => server?.once('listening', () => resolve()));
      return path;
    }

    it("refuses keyed requests with 500 problem+json instead of replaying one client's answer to another", async () => {
      const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
      try {
        let runs = 0;
        const path = await listenOnSocket(idempotency({ redis: redis.client() }), (_req, res) => {
          runs += 1;
          res.status(201).json({ order: runs });
        });
        const key = freshKey('unix');
        const first = await postOverSocket(path, key, '198.51.100.1');
        const second = await postOverSocket(path, key, '198.51.100.2');
        for (const answer of [first, second]) {
          expect(answer.status).toBe(500);
          expect(answer.headers['content-type']).toMatch(/^application\/problem\+json/);
          expect(JSON.parse(answer.body)).toMatchObject({
            type: expect.stringContaining('idempotency-caller-unknown'),
            status: 500,
          });
        }
        expect(runs).toBe(0);
        expect(events.types().filter((t) => t === 'caller-unknown')).toHaveLength(2);
        expect(warn).toHaveBeenCalledTimes(1);
        expect(warn.mock.calls[0]![0]).toMatch(/no client address .*trust proxy/);
        expect(warn.mock.calls[0]![1]).toEqual({ code: 'ERK_IDEMPOTENCY_CALLER_UNKNOWN' });
      } finally {
        warn.mockRestore();
      }
    });

    it('runs and replays as usual when a scope tells callers apart', async () => {
      let runs = 0;
      const path = await listenOnSocket(
        idempotency({ redis: redis.client(), scope: (req) => String(req.headers['x-forwarded-for']) }),
        (_req, res) => {
          runs += 1;
          res.status(201).json({ order: runs });
        },
      );
      const key = freshKey('unix-scoped');
      expect((await postOverSocket(path, key, '198.51.100.1')).status).toBe(201);
      const other = await postOverSocket(path, key, '198.51.100.2');
      expect(other.status).toBe(201);
      expect(other.headers['idempotent-replayed']).toBeUndefined();
      const replay = await postOverSocket(path, key, '198.51.100.1');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(JSON.parse(replay.body)).toEqual({ order: 1 });
      expect(runs).toBe(2);
    });
  });
});

describe('idempotency with a storeStatuses function that throws', () => {
  it('sends the answer unstored and releases the key at once, so a retry runs the handler instead of a 409 until ttl', async () => {
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
    try {
      let runs = 0;
      const middleware = idempotency({
        redis: redis.client(),
        storeStatuses: (status) => {
          if (status === 418) throw new Error('no rule for 418');
          return status < 500;
        },
      });
      const url = `${await servers.listen(
        orderApp(middleware, (_req, res) => {
          runs += 1;
          res.status(418).json({ runs });
        }),
      )}/orders`;
      const key = freshKey('throws');
      expect((await send(url, { key, body: { amount: 1 } })).status).toBe(418);
      await sleep(100);
      const retry = await send(url, { key, body: { amount: 1 } });
      expect(retry.status).toBe(418);
      expect(retry.json()).toEqual({ runs: 2 });
      const failed = events.events.find((e) => e.type === 'store-statuses-failed') as
        | { status?: number; error?: Error }
        | undefined;
      expect(failed?.status).toBe(418);
      expect(failed?.error?.message).toBe('no rule for 418');
      expect(events.events).toContainEqual(
        expect.objectContaining({ type: 'released', reason: 'store-statuses-threw', status: 418 }),
      );
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0]![1]).toEqual({ code: 'ERK_IDEMPOTENCY_STORE_STATUSES_THREW' });
    } finally {
      warn.mockRestore();
    }
  });
});
