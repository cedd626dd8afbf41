import type { RequestHandler } from 'express';
import { problem } from './problems';

/** 401 for visitors who have not logged in (any name and non-empty password work in the demo). */
export function requireUser(why: string): RequestHandler {
  return (req, res, next) => {
    if (!req.session?.userId) return problem(res, 401, `Log in first: ${why}`);
    next();
  };
}
