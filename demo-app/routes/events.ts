import { Router } from 'express';
import { type RedisClient, subscribe } from '../../lib';

/** Pub/sub channel of the live feed; every demo process subscribes, so they share events. */
export const EVENTS_CHANNEL = 'demo:events';

/** GET /api/events: Server-Sent Events fed by Redis pub/sub. */
export function eventRoutes(redis: RedisClient): Router {
  const router = Router();
  router.get('/events', async (req, res) => {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.write(': connected\n\n');
    let unsubscribe: (() => Promise<void>) | undefined;
    const heartbeat = setInterval(() => res.write(': ping\n\n'), 15_000);
    const close = () => {
      clearInterval(heartbeat);
      void unsubscribe?.();
    };
    req.on('close', close);
    try {
      unsubscribe = await subscribe(redis, EVENTS_CHANNEL, (message) => {
        res.write(`event: message\ndata: ${message}\n\n`);
      });
      if (req.destroyed) close();
    } catch {
      res.write('event: error\ndata: {"error":"live feed unavailable"}\n\n');
      res.end();
      close();
    }
  });
  return router;
}
