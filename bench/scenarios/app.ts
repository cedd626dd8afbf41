import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express';

/** The body every scenario's route answers: small, so the middleware dominates the cost. */
export const BODY = { hello: 'world', n: 42 };

export interface AppOptions {
  /** Origin latency of the route, e.g. 20 for a route backed by a slow service. */
  delayMs?: number;
  /** Route method. Default GET. */
  method?: 'get' | 'post';
  /** Middlewares in front of the route. */
  use?: RequestHandler[];
  /** Extra routes (login…), added before the measured route. */
  routes?: (app: Express) => void;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One Express 5 app with the shared route body; every scenario goes through here. */
export function benchApp(options: AppOptions = {}): Express {
  const app = express();
  options.routes?.(app);
  const handlers: RequestHandler[] = [...(options.use ?? [])];
  handlers.push(async (_req, res) => {
    if (options.delayMs) await sleep(options.delayMs);
    res.json(BODY);
  });
  app[options.method ?? 'get']('/', ...handlers);
  app.use(errorHandler);
  return app;
}

let reported = false;
// A scenario that errors is measuring the wrong thing: say so once, loudly, and answer 500 (counted).
const errorHandler: ErrorRequestHandler = (error, _req, res, _next) => {
  if (!reported) {
    reported = true;
    console.error(`[bench server] request failed: ${error instanceof Error ? error.stack : String(error)}`);
  }
  if (!res.headersSent) res.status(500).json({ error: 'bench route failed' });
};

/** Raised while building a scenario whose kit module is missing or incomplete: skip, do not fail. */
export class SkipScenario extends Error {}

/**
 * Loads `lib/<module>` lazily and returns one of its exports. Other engineers write these modules in
 * the same tree, so a missing or half-written one skips the scenario instead of breaking the run.
 */
export function kitExport<T>(module: string, name: string): T {
  let loaded: Record<string, unknown>;
  try {
    loaded = require(`../../lib/${module}`);
  } catch (error) {
    const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
    const missing = (error as { code?: string }).code === 'MODULE_NOT_FOUND' && message?.includes(module);
    throw new SkipScenario(
      missing ? `lib/${module} is not there yet` : `lib/${module} fails to load: ${message}`,
    );
  }
  const value = loaded[name];
  if (value === undefined) throw new SkipScenario(`lib/${module} does not export ${name} yet`);
  return value as T;
}

/**
 * A peer's package, loaded when its scenario is built: a package missing from node_modules skips
 * its scenarios instead of breaking every other one.
 */
export function peer<T>(specifier: string): T {
  try {
    return require(specifier) as T;
  } catch (error) {
    if ((error as { code?: string }).code !== 'MODULE_NOT_FOUND') throw error;
    throw new SkipScenario(`peer package ${specifier} is not installed (npm install)`);
  }
}

/** Sends one request and returns the response, for `prime` steps. */
export async function send(
  baseUrl: string,
  spec: { method?: string; path: string; headers?: Record<string, string>; body?: string },
): Promise<Response> {
  return fetch(baseUrl + spec.path, { method: spec.method ?? 'GET', headers: spec.headers, body: spec.body });
}
