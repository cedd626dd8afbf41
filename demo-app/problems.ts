import { STATUS_CODES } from 'node:http';
import type { RequestHandler, Response } from 'express';
import { sendProblem } from '../lib/errors';

/** RFC 9110's names where Node still has the older ones. */
const RENAMED: Record<number, string> = { 413: 'Content Too Large', 422: 'Unprocessable Content' };

/** Sends a plain problem+json answer for the demo's own routes, titled with the status's reason phrase. */
export function problem(res: Response, status: number, detail: string): void {
  sendProblem(res, {
    type: 'about:blank',
    title: RENAMED[status] ?? STATUS_CODES[status] ?? 'Error',
    status,
    detail,
  });
}

/**
 * For a route's other methods: 405 with `Allow`, rather than a 404 that says the path is unknown.
 * OPTIONS gets the `Allow` list (204), as Express answers it by itself.
 */
export function allow(...methods: string[]): RequestHandler {
  const allowed = [...methods, ...(methods.includes('GET') ? ['HEAD'] : []), 'OPTIONS'];
  return (req, res) => {
    res.setHeader('Allow', allowed.join(', '));
    if (req.method === 'OPTIONS') {
      res.status(204).end();
      return;
    }
    problem(res, 405, `${req.method} is not allowed on ${req.path}; use ${allowed.join(' or ')}`);
  };
}
