import { type Response, Router } from 'express';
import { type RedisClient, subscribe } from '../../lib';
import { allow, problem } from '../problems';

/** Pub/sub channel of the live feed; every demo process subscribes, so they share events. */
export const EVENTS_CHANNEL = 'demo:events';

/** What a feed may hold unsent for a slow client before it is dropped. */
export const MAX_BUFFERED = 64 * 1024;

/**
 * GET /api/events: Server-Sent Events fed by Redis pub/sub. `close()` ends every open stream: they
 * never end by themselves, so a shutdown would otherwise wait for its deadline.
 */
export function eventRoutes(redis: RedisClient): { router: Router; close: () => void } {
  const router = Router();
  const open = new Set<Response>();
  let closed = false;
  router.get('/events', async (req, res) => {
    if (closed) {
      // A keep-alive connection can still bring a request during the drain: a feed opened now would
      // hold the exit until the deadline.
      res.setHeader('Connection', 'close');
      res.setHeader('Retry-After', '1');
      return problem(res, 503, 'The server is shutting down; reconnect shortly.');
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
    let unsubscribe: (() => Promise<void>) | undefined;
    // A client that stops reading would have every event buffered for it: past MAX_BUFFERED it is
    // dropped (an EventSource reconnects by itself).
    const send = (chunk: string) => {
      if (res.writableLength > MAX_BUFFERED) res.destroy();
      else res.write(chunk);
    };
    const heartbeat = setInterval(() => send(': ping\n\n'), 15_000);
    const close = () => {
      open.delete(res);
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
