import { Router } from 'express';
import type { RedisClient } from '../../lib';
import { allow, problem } from '../problems';

const BOARD = 'demo:leaderboard';
const BOARD_TTL_SECONDS = 7 * 24 * 3600;
/** Players kept: the rest fall off the bottom. */
export const BOARD_SIZE = 1000;

/** The classic sorted-set leaderboard. */
export function leaderboardRoutes(redis: RedisClient): Router {
  const router = Router();

  router.get('/leaderboard', async (_req, res) => {
    const flat = await redis.zrevrange(BOARD, 0, 9, 'WITHSCORES');
    const top: Array<{ player: string; score: number }> = [];
    for (let i = 0; i < flat.length; i += 2) top.push({ player: flat[i]!, score: Number(flat[i + 1]) });
    res.json({ top });
  });

  router.post('/leaderboard/:player', async (req, res) => {
    const player = req.params.player!;
    const points = Number(req.body?.points ?? 1);
    if (!/^[\w.-]{1,32}$/.test(player))
      return problem(res, 400, 'player: 1–32 letters, digits, ".", "-" or "_"');
    if (!Number.isInteger(points) || points < 1 || points > 1000)
      return problem(res, 400, 'points must be 1..1000');
    // One atomic round trip: add the points, keep only the top BOARD_SIZE (anyone may post a new
    // name) and keep the board's TTL fresh.
    const result = await redis
      .multi()
      .zincrby(BOARD, points, player)
      .zremrangebyrank(BOARD, 0, -(BOARD_SIZE + 1))
      .expire(BOARD, BOARD_TTL_SECONDS)
      .exec();
    res.json({ player, score: Number(result?.[0]?.[1]) });
  });

  router.all('/leaderboard', allow('GET'));
  router.all('/leaderboard/:player', allow('POST'));

  return router;
}
