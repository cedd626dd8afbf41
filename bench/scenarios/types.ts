import type { Express } from 'express';
import type { RedisClient } from '../../lib/client';

/** One kind of request the load generator repeats. */
export interface RequestSpec {
  method?: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** Append `?n=<counter>` so that every request has a distinct URL (cache misses). */
  uniqueQuery?: boolean;
  /**
   * Append `?k=<counter mod cycle>`: requests go round `cycle` URLs, so that concurrent requests
   * rarely share one (a cache would coalesce those into one lookup).
   */
  cycle?: number;
}

/** What a scenario gets in its server process. */
export interface ServerContext {
  /** The one ioredis client of the process (made lazily by `createRedis()`), shared by kit and peers. */
  redis(): RedisClient;
  /** A key prefix private to this scenario, so processes never share (or clash over) keys. */
  prefix: string;
}

/** A scenario's app, built in its own server process. */
export interface BuiltApp {
  app: Express;
  /** Default `{ path: '/' }`. */
  request?: RequestSpec;
  /**
   * Runs once the app listens, before the probe: fill a cache, log in, exhaust a limit… May return
   * request changes (e.g. a session cookie).
   */
  prime?: (baseUrl: string, request: RequestSpec) => Promise<Partial<RequestSpec> | undefined>;
  close?: () => Promise<void>;
}

/** Promises the issue makes about a scenario, checked and printed after the run. */
export interface Expectations {
  /** Exact Redis commands per request. */
  commandsPerRequest?: number;
  /** Most Redis commands per request (fewer is fine: e.g. concurrent lookups coalesced into one). */
  maxCommandsPerRequest?: number;
  /** Lowest acceptable req/s ratio to bare Express. */
  minVsBare?: number;
  /** Lowest acceptable req/s ratio to another scenario of the same group. */
  minVs?: { scenario: string; ratio: number };
}

export interface Scenario {
  /** `group/name`; what `--only` matches. */
  id: string;
  label: string;
  kind: 'baseline' | 'kit' | 'peer';
  /** Id of the scenario of the same group this one is compared with ("× peer"). */
  peer?: string;
  /** Status every response must have (others are counted as unexpected). Default 200. */
  status?: number;
  /** A response header every response must carry, e.g. `X-Cache: HIT`; others count as unexpected. */
  header?: { name: string; value: string };
  expect?: Expectations;
  build(ctx: ServerContext): Promise<BuiltApp>;
}

export interface Group {
  id: string;
  title: string;
  /** One line under the group's table. */
  note?: string;
  scenarios: Scenario[];
  /**
   * Scenarios of other groups to run interleaved with this one, so ratios to them are measured under
   * the same conditions. Bare Express always is one.
   */
  references?: Scenario[];
  /** Concurrent connections for this group, instead of `--connections`. */
  connections?: number;
}
