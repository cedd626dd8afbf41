import type { Response } from 'express';
import { mark } from './marks';

/*
 * A middleware that holds the end of a response until Redis has answered (idempotency stores the
 * answer, redisSession saves the session) leaves `headersSent === false` meanwhile. Code that runs in
 * that gap believes it may still answer: Express's final handler after `res.json(); throw`, a timeout
 * guard. Without the kit the answer would already be out, and that code would leave it alone. These
 * helpers make the response behave as sent: a second answer is dropped as Node drops a write after
 * end, and status or header changes are undone before the held answer goes out.
 */

/** Header name → value as `getHeader` returns it. */
export type HeaderMap = Map<string, unknown>;

export const headerMap = (res: Response): HeaderMap =>
  new Map(res.getHeaderNames().map((name) => [name, res.getHeader(name)]));

/** What goes on the wire when the held end() runs: as the handler left it when it ended. */
interface WireState {
  status: number;
  message: string;
  headers: HeaderMap;
}

/** The response's status and headers now, or undefined once they went out. */
function wireOf(res: Response): WireState | undefined {
  return res.headersSent
    ? undefined
    : { status: res.statusCode, message: res.statusMessage, headers: headerMap(res) };
}

/** Puts the status and headers back as they were when the handler ended the response. */
function restoreWire(res: Response, wire: WireState | undefined): void {
  if (!wire || res.headersSent) return;
  res.statusCode = wire.status;
  res.statusMessage = wire.message;
  for (const name of res.getHeaderNames()) if (!wire.headers.has(name)) res.removeHeader(name);
  for (const [name, value] of wire.headers) {
    if (res.getHeader(name) !== value) res.setHeader(name, value as string | string[] | number);
  }
}

/** Calls the callback among `args`, if any, on the next tick: Node's answer to a write after end. */
export function dropLate(args: unknown[], error?: Error): void {
  const callback = args.find((a) => typeof a === 'function') as ((e?: Error) => void) | undefined;
  if (callback) process.nextTick(callback, error);
}

const writeAfterEnd = () =>
  Object.assign(new Error('write after end'), { code: 'ERR_STREAM_WRITE_AFTER_END' });

/** The response methods that drop a second answer. */
export interface Droppers {
  write: Response['write'];
  end: Response['end'];
  writeHead: Response['writeHead'];
}

const droppers: Droppers = {
  write: function write(...late: unknown[]) {
    dropLate(late, writeAfterEnd());
    return false;
  } as Response['write'],
  end: function end(this: Response, ...late: unknown[]) {
    dropLate(late);
    return this;
  } as Response['end'],
  writeHead: function writeHead(this: Response) {
    return this;
  } as Response['writeHead'],
};

/** Puts the droppers in place of `res.write`/`end`/`writeHead`; returns what they replaced. */
function dropLateAnswers(res: Response): Droppers {
  const was = { write: res.write, end: res.end, writeHead: res.writeHead };
  res.write = droppers.write;
  res.end = droppers.end;
  res.writeHead = droppers.writeHead;
  return was;
}

function putBack(res: Response, methods: Droppers): void {
  res.write = methods.write;
  res.end = methods.end;
  res.writeHead = methods.writeHead;
}

/**
 * Makes `setHeader`/`removeHeader` do nothing, instead of throwing, once the headers are sent: a late
 * answer (see above) sets headers after the held one went out, and Node would throw there, from an
 * event callback, taking the process down. Installed once per response.
 */
function quietAfterSend(res: Response): void {
  const marked = res as Response & { [QUIET]?: true };
  if (marked[QUIET]) return;
  marked[QUIET] = true;
  const { setHeader, removeHeader } = res;
  res.setHeader = function (this: Response, ...args: Parameters<Response['setHeader']>) {
    return this.headersSent ? this : setHeader.apply(this, args);
  } as Response['setHeader'];
  res.removeHeader = function (this: Response, name: string) {
    if (!this.headersSent) removeHeader.call(this, name);
  };
}

const QUIET = Symbol('express-redis-kit.quiet-after-send');

/** A response whose end is held: see {@link holdAnswer}. */
export interface HeldAnswer {
  /** The response methods the hold replaced. */
  readonly kept: Droppers;
  /**
   * Puts `methods` back (default: those the hold replaced) and the status and headers as they were,
   * then runs `send`, which writes the held answer (or one in its place). A throw there destroys the
   * response: it would otherwise be an unhandled rejection and a request never answered. Once the
   * answer is out, later ones are dropped as while it was held, unless `send` left the response open
   * for a layer in front that defers its own end (and guards the gap itself).
   */
  release(send: () => void, methods?: Droppers): void;
}

/** On a response: how many kit layers hold the end() the app called, and who waits for them. */
interface Holds {
  count: number;
  after: Array<() => void>;
}
const HOLDS = mark<Holds>('late-answers.holds');

/** Whether the app ended `res` and the kit holds that end while Redis answers. */
export const isHeld = (res: Response): boolean => (HOLDS.get(res)?.count ?? 0) > 0;

/**
 * Runs `fn` once no layer holds the answer any more (at once when none does): the answer is then as
 * it goes out (the app's, with status changes made during the hold undone, or what a layer put in
 * its place, such as the session's 503), whether or not the client is still there.
 */
export function whenReleased(res: Response, fn: () => void): void {
  const holds = HOLDS.get(res);
  if (holds && holds.count > 0) holds.after.push(fn);
  else fn();
}

/**
 * Makes the response behave as sent while its end waits for Redis: a second answer is dropped,
 * status and header changes are undone on release, and header calls after the release are quiet.
 */
export function holdAnswer(res: Response): HeldAnswer {
  let holds = HOLDS.get(res);
  if (!holds) {
    holds = { count: 0, after: [] };
    HOLDS.set(res, holds);
  }
  const mine = holds;
  mine.count += 1;
  let released = false;
  const wire = wireOf(res);
  const kept = dropLateAnswers(res);
  quietAfterSend(res);
  return {
    kept,
    release(send, methods = kept) {
      putBack(res, methods);
      try {
        restoreWire(res, wire);
        send();
      } catch (error) {
        res.destroy(error as Error);
      }
      if (res.writableEnded) dropLateAnswers(res);
      if (released) return;
      released = true;
      // After send(): a layer behind this one that held the answer in turn is counted by then.
      mine.count -= 1;
      if (mine.count > 0) return;
      for (const fn of mine.after.splice(0)) {
        try {
          fn();
        } catch {
          // A waiter's trouble is its own; the answer is out.
        }
      }
    },
  };
}

/**
 * The handler's own answer, which a layer between it and the client replaced with an error of its
 * own: redisSession's 503/500 when the session could not be saved after the handler answered. A
 * layer further out that keeps answers for retries (idempotency mounted before redisSession) stores
 * this one: the handler ran, and a retry must get its answer, not run it again.
 */
export interface ReplacedAnswer {
  status: number;
  message: string;
  headers: HeaderMap;
  /** The handler's end() chunk and encoding: its whole body (nothing went out before). */
  chunk: unknown;
  encoding: string | undefined;
}

const REPLACED = mark<ReplacedAnswer>('answer.replaced');

/** Notes the answer about to be replaced; call while the response still holds it, unsent. */
export function noteReplacedAnswer(res: Response, endArgs: readonly unknown[]): void {
  REPLACED.set(res, {
    status: res.statusCode,
    message: res.statusMessage,
    headers: headerMap(res),
    chunk: endArgs[0],
    encoding: typeof endArgs[1] === 'string' ? endArgs[1] : undefined,
  });
}

/** The handler's answer a layer closer to it replaced, if any (see {@link ReplacedAnswer}). */
export const replacedAnswer = (res: Response): ReplacedAnswer | undefined => REPLACED.get(res);
