import type { IncomingHttpHeaders } from 'node:http';
import { MAX_TIMER_MS } from '../duration';
import type { Rec } from './l1';

/**
 * What a coalesced request learns from the request that went to the origin for it: an entry, Redis
 * is down, the answer is not storable (go to the origin), or the fill failed or took too long (look
 * up and queue on the lock like any miss).
 */
export type FlightResult =
  | { rec: Rec; headers: IncomingHttpHeaders }
  | { bypass: true }
  | { uncacheable: true }
  | { retry: true };

/** Ends a fill's in-process flight with its result; `close` only stops new requests joining it. */
export type Settle = ((result: FlightResult) => void) & { close?: () => void };

/** Settles nothing: for a fill no request joined (a HEAD, a background refresh, a coalesced one). */
export const noFlight: Settle = () => {};

/**
 * Misses on one key in this process share one trip to the origin: the first opens a flight, and
 * the others wait for its result. Across processes, the fill lock in Redis does the same.
 */
export class Flights {
  private readonly open = new Map<string, { flight: Promise<FlightResult>; heard: number }>();

  /**
   * @param maxWaitMs A waiter gives up after this long (a stuck origin), as a cross-process one would.
   * @param heard How many invalidations the cache has heard (CacheCore.heard).
   */
  constructor(
    private readonly maxWaitMs: number,
    private readonly heard: () => number,
  ) {}

  /**
   * The flight of `key` in progress, if any, with the cache's `heard` count when it started: a
   * waiter checks its result against the invalidations heard since (CacheCore.invalidatedSince).
   */
  pending(key: string): { flight: Promise<FlightResult>; heard: number } | undefined {
    return this.open.get(key);
  }

  /** Opens the flight of `key`; the returned function ends it (and `close` stops new joiners). */
  start(key: string): Settle {
    let settle: Settle = noFlight;
    const flight = new Promise<FlightResult>((resolve) => {
      const close = () => {
        if (this.open.get(key)?.flight === flight) this.open.delete(key);
      };
      settle = Object.assign(
        (result: FlightResult) => {
          close();
          resolve(result);
        },
        { close },
      );
    });
    this.open.set(key, { flight, heard: this.heard() });
    return settle;
  }

  /** Waits for a flight, at most `maxWaitMs`: past that, the answer is "go to the origin". */
  async wait(flight: Promise<FlightResult>): Promise<FlightResult> {
    return (await within(flight, this.maxWaitMs)) ?? { uncacheable: true };
  }
}

/**
 * The promise's value, or undefined once `ms` have passed without one. The wait is capped at what a
 * timer holds: past 2^31 - 1 ms, setTimeout fires after 1 ms instead.
 */
export function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.min(ms, MAX_TIMER_MS));
    timer.unref?.();
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
