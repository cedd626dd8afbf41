import { type Response, Router } from 'express';
import { type RedisClient, subscribe } from '../../lib';
import { createIpGrouper } from '../../lib/ip';
import { allow, problem } from '../problems';

/** Pub/sub channel of the live feed; every demo process subscribes, so they share events. */
export const EVENTS_CHANNEL = 'demo:events';

/** What a feed may hold unsent for a slow client before it is dropped. */
export const MAX_BUFFERED = 64 * 1024;

/**
 * Feeds open at once, per client address (IPv6 by /56) and in all: each holds a socket, a timer and a handler
 * for as long as its client stays, which the /api limiter (opens per minute) does not bound.
 */
export const MAX_FEEDS_PER_CLIENT = 8;
export const MAX_FEEDS = 1000;

/**
 * GET /api/events: Server-Sent Events fed by Redis pub/sub. `close()` ends every open stream: they
 * never end by themselves, so a shutdown would otherwise wait for its deadline.
 */
export function eventRoutes(redis: RedisClient): { router: Router; close: () => void } {
  const router = Router();
  const open = new Set<Response>();
  const perClient = new Map<string, number>();
  const groupIp = createIpGrouper(56);
  let closed = false;
  router.get('/events', async (req, res) => {
    if (closed) {
      // A keep-alive connection can still bring a request during the drain: a feed opened now would
      // hold the exit until the deadline.
      res.setHeader('Connection', 'close');
      res.setHeader('Retry-After', '1');
      return problem(res, 503, 'The server is shutting down; reconnect shortly.');
    }
    // IPv6 by /56, as the /api limiter counts: one home line holds a whole block of addresses.
    const client = groupIp(req.ip ?? 'unknown');
    const mine = perClient.get(client) ?? 0;
    if (req.method !== 'HEAD' && (mine >= MAX_FEEDS_PER_CLIENT || open.size >= MAX_FEEDS)) {
      res.setHeader('Retry-After', '15');
      return mine >= MAX_FEEDS_PER_CLIENT
        ? problem(res, 429, `At most ${MAX_FEEDS_PER_CLIENT} live feeds per client at once; close one first.`)
        : problem(res, 503, 'Too many live feeds are open; retry shortly.');
    }
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    if (req.method === 'HEAD') {
      // A HEAD response has no body: writing the stream would never send the headers, nor end.
      res.end();
      return;
    }
    res.write(': connected\n\n');
    open.add(res);
    perClient.set(client, mine + 1);
    let unsubscribe: (() => Promise<void>) | undefined;
    // A client that stops reading would have every event buffered for it: past MAX_BUFFERED it is
    // dropped (an EventSource reconnects by itself).
    const send = (chunk: string) => {
      if (res.writableLength > MAX_BUFFERED) res.destroy();
      else res.write(chunk);
    };
    const heartbeat = setInterval(() => send(': ping\n\n'), 15_000);
    // Runs again once the subscription is made, if the client left while it was being made.
    const close = () => {
      if (open.delete(res)) {
        const left = (perClient.get(client) ?? 1) - 1;
        if (left > 0) perClient.set(client, left);
        else perClient.delete(client);
      }
      clearInterval(heartbeat);
      void unsubscribe?.();
    };
    req.on('close', close);
    try {
      unsubscribe = await subscribe(redis, EVENTS_CHANNEL, (message) => {
        send(`event: message\ndata: ${message}\n\n`);
      });
      if (req.destroyed) close();
    } catch {
      res.write('event: error\ndata: {"error":"live feed unavailable"}\n\n');
      res.end();
      close();
    }
  });
  router.all('/events', allow('GET'));

  return {
    router,
    close: () => {
      closed = true;
      for (const res of open) res.end();
    },
  };
}
