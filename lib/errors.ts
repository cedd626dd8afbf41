import type { Response } from 'express';

/** An RFC 9457 problem details object, sent as `application/problem+json`. */
export interface Problem {
  /** URI naming the problem type. */
  type: string;
  title: string;
  status: number;
  detail?: string;
  [extension: string]: unknown;
}

const BODY_HEADERS = [
  'Content-Length',
  'Content-Encoding',
  'Content-Range',
  'Content-Disposition',
  'ETag',
  'Last-Modified',
  'Transfer-Encoding',
  // Announces trailers of a chunked body: with the Content-Length set below, Node refuses it and
  // the answer would be a reset.
  'Trailer',
];

const TYPE_BASE = 'urn:express-redis-kit:problem:';

/** Builds the URI of one of the kit's problem types, e.g. `problemType('rate-limited')`. */
export function problemType(slug: string): string {
  return TYPE_BASE + slug;
}

/**
 * Answers with a problem+json body. Safe to call from any middleware: it never throws, and if the
 * headers are already out it only ends the response.
 */
export function sendProblem(res: Response, problem: Problem, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    if (!res.writableEnded) res.end();
    return;
  }
  // Headers a handler set for the body it meant to send would describe the wrong body.
  // Only those set: removing an absent Content-Length still turns off Node's own for this body.
  for (const stale of BODY_HEADERS) if (res.hasHeader(stale)) res.removeHeader(stale);
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.status(problem.status);
  res.setHeader('Content-Type', 'application/problem+json; charset=utf-8');
  const body = JSON.stringify(problem);
  // Set here: a Content-Length removed above (the handler's) would keep Node from adding its own.
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

/**
 * `instanceof` by class, or by the kit's error `code`: an app that both imports and requires the
 * kit loads two copies (ESM and CommonJS builds), and an error from one must still be recognised
 * by the other's checks (`handleErrors`, the fail modes) and by the app's own `instanceof`.
 */
export function isKitError(cls: object, value: unknown, codes: ReadonlySet<string>): boolean {
  if (Function.prototype[Symbol.hasInstance].call(cls, value)) return true;
  const code = value instanceof Error ? (value as { code?: unknown }).code : undefined;
  return typeof code === 'string' && codes.has(code);
}

/** Redis could not be used for this call: down, too slow, or the circuit breaker is open. */
export class RedisUnavailableError extends Error {
  /** The codes `instanceof` accepts from another copy of the kit (this class and its subclasses). */
  protected static readonly codes: ReadonlySet<string> = new Set([
    'ERK_REDIS_UNAVAILABLE',
    'ERK_REDIS_REFUSED',
    'ERK_REDIS_TIMEOUT',
  ]);
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: the class `instanceof` asks about (a subclass inherits this).
    return isKitError(this, value, this.codes);
  }
  readonly code: string = 'ERK_REDIS_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RedisUnavailableError';
  }
}

/**
 * Redis answered, but refused the call: a key of the kit's prefix holds another type (`WRONGTYPE`,
 * another app wrote it), the ACL user lacks a permission (`NOPERM`), memory is full (`OOM`), the
 * server is a read-only replica (`READONLY`)… The request cannot be served as promised, so each
 * middleware applies its fail mode, as when Redis is down; the server is healthy, so the circuit
 * breaker stays closed and calls that can still succeed (reads under `OOM`) go on. `cause` is
 * ioredis's `ReplyError`; the message is its message.
 */
export class RedisRefusedError extends RedisUnavailableError {
  protected static override readonly codes: ReadonlySet<string> = new Set(['ERK_REDIS_REFUSED']);
  override readonly code = 'ERK_REDIS_REFUSED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RedisRefusedError';
  }
}

/** A Redis call did not answer within its time budget. */
export class RedisTimeoutError extends RedisUnavailableError {
  protected static override readonly codes: ReadonlySet<string> = new Set(['ERK_REDIS_TIMEOUT']);
  override readonly code = 'ERK_REDIS_TIMEOUT';
  constructor(
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(`Redis did not answer within ${timeoutMs} ms`, options);
    this.name = 'RedisTimeoutError';
  }
}

const SESSION_ENDED: ReadonlySet<string> = new Set(['ERK_SESSION_ENDED']);

/**
 * `sessions.login()` lost a race: a `logoutAll()` or `revoke()` for the user, elsewhere, ended the new
 * session between its listing under the user and its write. Nothing was saved and no cookie is sent;
 * the user logs in again. (Retrying silently could let a login checked against a password that
 * `logoutAll()` was revoking outlive it.)
 */
export class SessionEndedError extends Error {
  static override [Symbol.hasInstance](value: unknown): boolean {
    return isKitError(SessionEndedError, value, SESSION_ENDED);
  }
  readonly code = 'ERK_SESSION_ENDED';
  /** What Express's own error handler answers without `handleErrors`: 409 Conflict, not a 500. */
  readonly status = 409;
  readonly statusCode = 409;
  constructor() {
    super(
      'express-redis-kit: the new session was ended by a logoutAll() or revoke() for the user while login() was creating it; nothing was saved. Ask the user to log in again.',
    );
    this.name = 'SessionEndedError';
  }
}

/**
 * A bad option value as the user would recognise it in a message: `NaN` and `Infinity` (which JSON
 * would print as `null`), `10n`, a function, an object by its keys, not a crash while building it.
 */
export function shown(value: unknown): string {
  switch (typeof value) {
    case 'boolean':
    case 'number':
      return String(value);
    case 'bigint':
      return `${value}n`;
    case 'function':
      return 'a function';
    case 'symbol':
    case 'undefined':
      return String(value);
  }
  if (typeof value === 'string') return JSON.stringify(value);
  return shapeOf(value);
}

/**
 * An object or array by its shape only. The value may be something an app's callback returned per
 * request (`scope: req => req.user`), and its contents (a password hash, a token) must not reach an
 * error message, a log or, with Express's default handler outside production, the response.
 */
function shapeOf(value: unknown): string {
  if (value === null) return 'null';
  // A Proxy may throw from any of these: the message is still built.
  try {
    if (Array.isArray(value)) {
      const kinds = [...new Set(value.slice(0, 20).map((item) => (item === null ? 'null' : typeof item)))];
      return value.length === 0 ? 'an empty array' : `an array of ${value.length} (${kinds.join(', ')})`;
    }
    const kind: unknown = (value as object).constructor?.name;
    const keys = Object.keys(value as object);
    const named = typeof kind === 'string' && kind !== '' && kind !== 'Object' ? `a ${kind}` : 'an object';
    if (keys.length === 0) return named;
    // Plain names as they are; any other (a newline, a quote) quoted, so it cannot forge a line.
    const listed = keys.slice(0, 6).map((k) => (/^[\w$-]+$/.test(k) ? k : JSON.stringify(k)));
    return `${named} with keys ${listed.join(', ')}${keys.length > 6 ? ', …' : ''}`;
  } catch {
    return 'an object';
  }
}

/**
 * Refuses option names the component does not know, so a typo (`staleWhileRevalidte`) or an option
 * carried over from another library is never silently ignored. `renamed` maps such names to a hint.
 */
export function checkKnownOptions(
  options: object,
  known: ReadonlySet<string>,
  component: string,
  renamed: Readonly<Record<string, string>> = {},
  where = '',
): void {
  for (const option of Object.keys(options)) {
    if (known.has(option)) continue;
    const hint = Object.hasOwn(renamed, option) ? renamed[option]! : '';
    throw optionError(
      `${where}${option}`,
      `is not ${/^[aeiou]/i.test(component) ? 'an' : 'a'} ${component} option`,
      hint ? `${hint[0]!.toUpperCase()}${hint.slice(1)}.` : '',
    );
  }
}

/** Builds the construction-time error for a bad option: names the option, the value and the fix. */
export function optionError(option: string, problem: string, fix?: string): TypeError {
  return new TypeError(`express-redis-kit: option "${option}" ${problem}.${fix ? ` ${fix}` : ''}`);
}

/**
 * Reads a boolean option: `undefined` gives the default; anything but `true`/`false` is refused, so a
 * string from an environment variable (`'false'`) cannot quietly turn a feature on.
 */
export function booleanOption(value: unknown, option: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw optionError(option, `must be true or false; got ${shown(value)}`);
  return value;
}

/** Reads an optional callback option: `undefined` passes, anything but a function is refused. */
export function functionOption<T>(value: T | undefined, option: string): T | undefined {
  if (value !== undefined && typeof value !== 'function') {
    throw optionError(option, `must be a function; got ${typeof value}`);
  }
  return value;
}

/** Same as {@link optionError} for out-of-range numbers. */
export function optionRangeError(option: string, problem: string, fix?: string): RangeError {
  return new RangeError(`express-redis-kit: option "${option}" ${problem}.${fix ? ` ${fix}` : ''}`);
}

/**
 * The error for a bad numeric option: a {@link RangeError} when `value` is a number out of range, a
 * {@link TypeError} when it is not a number at all (e.g. the string `'10'` from an environment
 * variable), so `catch` clauses can tell a wrong type from a wrong amount.
 */
export function numberOptionError(
  option: string,
  value: unknown,
  problem: string,
  fix?: string,
): TypeError | RangeError {
  return (typeof value === 'number' ? optionRangeError : optionError)(option, problem, fix);
}

/**
 * What a user callback threw or rejected with, as an error for `next()`: Express reads a falsy
 * `next(error)` as "carry on", so a `throw undefined` (or `reject('')`) would skip the middleware:
 * a request not counted, a handler run without its idempotency record.
 */
export function thrownError(value: unknown, component: string): unknown {
  return (
    value ||
    new Error(
      `express-redis-kit ${component}: a callback threw or rejected with ${shown(value)}, not an Error.`,
    )
  );
}
