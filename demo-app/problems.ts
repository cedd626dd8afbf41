import type { Response } from 'express';
import { sendProblem } from '../lib/errors';

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  413: 'Content Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** Sends a plain problem+json answer for the demo's own routes. */
export function problem(res: Response, status: number, detail: string): void {
  sendProblem(res, { type: 'about:blank', title: TITLES[status] ?? 'Error', status, detail });
}
