import { randomUUID } from 'node:crypto';
import { type RequestHandler, Router } from 'express';
import { idempotency, type RedisClient } from '../../lib';
import { problem } from '../problems';
import { EVENTS_CHANNEL } from './events';

/** POST /api/orders: idempotent per logged-in user; publishes `order.created` to the live feed. */
export function orderRoutes(redis: RedisClient): Router {
  const router = Router();
  const requireUser: RequestHandler = (req, res, next) => {
    if (!req.session?.userId) return problem(res, 401, 'Log in first: orders are scoped to the session user');
    next();
  };
  const exactlyOnce = idempotency({ redis, scope: (req) => req.session.userId! });

  router.post('/orders', requireUser, exactlyOnce, async (req, res) => {
    const item = typeof req.body?.item === 'string' ? req.body.item.slice(0, 100) : '';
    const quantity = Number(req.body?.quantity ?? 1);
    if (!item || !Number.isInteger(quantity) || quantity < 1 || quantity > 100) {
      return problem(res, 400, 'Send {"item": "...", "quantity": 1..100}');
    }
    const order = {
      id: randomUUID(),
      item,
      quantity,
      userId: req.session.userId,
      createdAt: new Date().toISOString(),
    };
    await redis.publish(EVENTS_CHANNEL, JSON.stringify({ type: 'order.created', order }));
    res.status(201).json(order);
  });

  return router;
}
