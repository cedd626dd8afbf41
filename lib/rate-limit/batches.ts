import type { NextFunction, Request, Response } from 'express';

/** A request waiting for its decision. */
export interface Pending {
  req: Request;
  res: Response;
  next: NextFunction;
  key: string;
  cost: number;
  member: string;
}

/** A counted request to give back (skipSuccessfulRequests / skipFailedRequests). */
export interface Refund {
  cost: number;
  member: string;
  /** Redis time when it was counted: a fixed window only refunds within that window. */
  origin: number;
  /** `performance.now()` when that count was sent: with `origin`, bounds Redis time later. */
  countSentAt: number;
  /** The script's refund hints, four per policy: bound how much the request still holds. */
  hints: number[];
}

/** Most requests one script call decides: keeps each call short, as Redis runs scripts one at a time. */
export const MAX_BATCH = 64;

type Send<T> = (key: string, batch: T[]) => void;

/**
 * Coalescing: decisions and refunds for the same client key queued in one event-loop turn, sent as
 * one script call per key (at most MAX_BATCH each) right after that turn's I/O callbacks.
 */
export class TurnBatches {
  private readonly decisions = new Map<string, Pending[]>();
  private readonly refunds = new Map<string, Refund[]>();
  private scheduled = false;

  constructor(
    private readonly sendDecisions: Send<Pending>,
    private readonly sendRefunds: Send<Refund>,
    /** Makes the turn's calls leave together, now (scripts.ts `sendThisTurn`). */
    private readonly together: (send: () => void) => void,
  ) {}

  decide(key: string, pending: Pending): void {
    this.enqueue(this.decisions, key, pending);
  }

  refund(key: string, refund: Refund): void {
    this.enqueue(this.refunds, key, refund);
  }

  private enqueue<T>(queue: Map<string, T[]>, key: string, item: T): void {
    const batch = queue.get(key);
    if (batch) batch.push(item);
    else queue.set(key, [item]);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    this.together(this.drainAll);
  };

  private readonly drainAll = (): void => {
    // Refunds first: a request decided in this same turn sees the quota they give back.
    drain(this.refunds, this.sendRefunds);
    drain(this.decisions, this.sendDecisions);
  };
}

/** Sends each key's queue in calls of at most MAX_BATCH, and empties it. */
function drain<T>(queue: Map<string, T[]>, send: Send<T>): void {
  for (const [key, batch] of queue) {
    for (let i = 0; i < batch.length; i += MAX_BATCH) send(key, batch.slice(i, i + MAX_BATCH));
  }
  queue.clear();
}
