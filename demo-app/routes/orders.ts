import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import { idempotency, type RedisClient } from '../../lib';
import { allow, problem } from '../problems';
import { requireUser } from '../require-user';
import { EVENTS_CHANNEL } from './events';

/**
 * POST /api/orders: idempotent per logged-in user; publishes `order.created` to the live feed, which
 * anyone may watch, so without who ordered.
 */
export function orderRoutes(redis: RedisClient, prefix: string): Router {
  const router = Router();
  const exactlyOnce = idempotency({ redis, prefix, scope: (req) => req.session.userId! });

  router.post(
    '/orders',
    requireUser('orders are scoped to the session user'),
    exactlyOnce,
    async (req, res) => {
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
      const { userId: _who, ...anonymous } = order;
      await redis.publish(EVENTS_CHANNEL, JSON.stringify({ type: 'order.created', order: anonymous }));
      res.status(201).json(order);
    },
  );

  router.all('/orders', allow('POST'));

  return router;
}
