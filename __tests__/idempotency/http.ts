import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Express, type RequestHandler } from 'express';
import type { RedisClient } from '../../lib/client';
import { type KitEvent, onKitEvent } from '../../lib/events';
import { type IdempotencyOptions, idempotency } from '../../lib/idempotency';
import { listen } from '../rate-limit/fixtures/http';

/** A parsed HTTP answer with the raw body bytes. */
export interface Answer {
  status: number;
  statusText: string;
  headers: Headers;
  body: Buffer;
  json(): unknown;
}

/** Listening servers of one test file; close them all in afterEach/afterAll. */
export function useServers() {
  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(
      servers.splice(0).map(
        (s) =>
          new Promise<void>((resolve) => {
            s.closeAllConnections();
            s.close(() => resolve());
          }),
      ),
    );
  });
  return {
    /** Starts `app` on a free loopback port; returns its base URL. */
    async listen(app: Express): Promise<string> {
      const server = app.listen(0, '127.0.0.1');
      servers.push(server);
      await new Promise<void>((resolve) => server.once('listening', () => resolve()));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    },
  };
}

/** An app with express.json() and the middleware in front of `handler` on POST /orders. */
export function orderApp(middleware: RequestHandler, handler: RequestHandler): Express {
  const app = express();
  app.use(express.json());
  app.post('/orders', middleware, handler);
  app.patch('/orders', middleware, handler);
  app.get('/orders', middleware, handler);
  return app;
}

export async function send(
  url: string,
  options: {
    key?: string;
    body?: unknown;
    method?: string;
    headers?: Record<string, string>;
    /** Fail instead of waiting for an answer that never comes. */
    timeoutMs?: number;
  } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key !== undefined) headers['Idempotency-Key'] = options.key;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['Content-Type'] ??= 'application/json';
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  }
  const signal = options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs);
  const response = await fetch(url, { method: options.method ?? 'POST', headers, body, signal });
  const bytes = Buffer.from(await response.arrayBuffer());
  return {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
    body: bytes,
    json: () => JSON.parse(bytes.toString('utf8')),
  };
}

/** Records the idempotency events published while a test runs. */
export function useEvents() {
  const events: KitEvent[] = [];
  let off: (() => void) | undefined;
  beforeEach(() => {
    events.length = 0;
    off = onKitEvent((e) => {
      if (e.component === 'idempotency' && e.type !== 'redis-call') events.push(e);
    });
  });
  afterEach(() => off?.());
  return {
    types: () => events.map((e) => e.type),
    events,
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let counter = 0;
/** A fresh key per call, so tests in one file never collide. */
export function freshKey(label = 'k'): string {
  counter += 1;
  return `${label}-${process.pid}-${Date.now()}-${counter}`;
}

/**
 * POST /orders behind idempotency() on `client` (timeout 2 s, plus `options`); the handler answers
 * 201 with how often it ran. Its server's close goes into `stops`.
 */
export async function orderServer(
  client: RedisClient,
  stops: Array<() => unknown>,
  options: Partial<IdempotencyOptions> = {},
) {
  let runs = 0;
  const app = express();
  app.post('/orders', idempotency({ redis: client, timeout: 2000, ...options }), (_req, res) => {
    runs++;
    res.status(201).json({ order: runs });
  });
  const http = await listen(app);
  stops.push(http.close);
  const post = (key: string) =>
    fetch(`${http.url}/orders`, { method: 'POST', headers: { 'Idempotency-Key': key } });
  return { post, runs: () => runs };
}
