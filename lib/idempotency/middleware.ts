import { createHash, randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import ipaddr from 'ipaddr.js';
import { problemType, RedisUnavailableError, sendProblem, thrownError } from '../errors';
import { emitKitEvent } from '../events';
import { didNotRun, guarded } from '../guarded';
import { scopePart } from '../keys';
import { emitWarningOnce } from '../logger';
import { firstPass, mark, warnPassedTwice } from '../marks';
import { nodeField, OutageTracker } from '../outage';
import { markInProgress, protect, releaseKey } from './lease';
import { type IdempotencyOptions, type ResolvedIdempotencyOptions, resolveOptions } from './options';
import * as record from './record';
import { DECODED_BODY_FACTOR, replay } from './replay';
import { clientAddress, parseKey, recordKey, resolveScope, routeOf } from './request-key';
import { runningFor } from './socket-destroy';

/** Identifies one record, for the admin API. */
export interface IdempotencyRecordId {
  /** The idempotency key the client sent (without quotes). */
  key: string;
  /** The route part of the namespace: `req.baseUrl + req.route.path`, e.g. `'/api/orders'`. */
  route: string;
  /** Default `'POST'`. */
  method?: string;
  /** What the `scope` function returned for the client; leave out and pass `ip` for the default scope. */
  scope?: string | number;
  /** The client IP, when the default scope (`req.ip`) was used. */
  ip?: string;
}

/** The middleware, carrying its admin API. */
export interface IdempotencyMiddleware {
  (req: Request, res: Response, next: NextFunction): void;
  /** The options after defaults. */
  readonly options: Readonly<ResolvedIdempotencyOptions>;
  /** Deletes a record (in flight or completed) so the key can be used afresh. Resolves true if one existed. */
  forget(id: IdempotencyRecordId): Promise<boolean>;
}

const COMPONENT = 'idempotency';

/**
 * The records each request passed idempotency for. A request that reaches idempotency twice for the
 * same record (mounted on the app and again on the route, or two instances with the same options)
 * would find its own reservation in flight and answer 409, and the first pass would store that 409
 * as the key's answer for its whole ttl: the operation could never run under that key.
 */
const RESERVED = mark<Set<string>>('idempotency.reserved');

/**
 * Exactly-once POST/PATCH with an `Idempotency-Key` header: the first request runs the handler and
 * its response is stored; retries with the same key get the stored response (`Idempotent-Replayed:
 * true`), 409 while the first is still running, 422 if the payload differs. See the README, "Idempotency keys".
 */
export function idempotency(options: IdempotencyOptions): IdempotencyMiddleware {
  const o = resolveOptions(options);
  const guard = { timeoutMs: o.timeoutMs, component: COMPONENT, name: o.name } as const;
  const emit = (type: string, detail: Record<string, unknown> = {}) =>
    emitKitEvent({ component: COMPONENT, name: o.name, type, ...detail });
  const outages = new OutageTracker(o.redis);

  const problem = (
    res: Response,
    status: number,
    slug: string,
    title: string,
    detail: string,
    retry = false,
  ) =>
    sendProblem(
      res,
      { type: problemType(slug), title, status, detail },
      retry ? { 'Retry-After': String(o.retryAfterSeconds) } : {},
    );

  async function handle(req: Request, res: Response, next: NextFunction): Promise<void> {
    if (!o.methods.has(req.method)) return next();
    const parsed = parseKey(req.headers[o.header]);
    if (!parsed.ok) {
      if (parsed.reason === 'missing' && !o.required) return next();
      emit(parsed.reason === 'missing' ? 'missing-key' : 'invalid-key');
      return problem(
        res,
        400,
        parsed.reason === 'missing' ? 'idempotency-key-missing' : 'idempotency-key-invalid',
        parsed.reason === 'missing' ? 'Idempotency key required' : 'Malformed idempotency key',
        parsed.reason === 'missing'
          ? `This endpoint requires an ${o.header} header.`
          : `The ${o.header} header must be 1 to 255 visible ASCII characters, sent once.`,
      );
    }
    const [scope, rawFingerprint] = await Promise.all([resolveScope(req, o.scope), o.fingerprint(req)]);
    if (scope === undefined) return unknownCaller(req, res);
    const fingerprint = createHash('sha256').update(rawFingerprint).digest('hex');
    const key = recordKey(o.prefix, scope, req.method, routeOf(req), parsed.key);
    if (!firstPass(RESERVED, req, key)) {
      // The first pass protects this request already: its answer is the one stored.
      emit('reached-twice');
      warnPassedTwice('ERK_IDEMPOTENCY_TWICE', 'idempotency', 'key');
      return next();
    }
    const owner = randomUUID();

    let found: record.ReserveResult;
    try {
      found = await guarded(o.redis, () => record.reserve(o.redis, key, fingerprint, owner, o.lockTtlMs), {
        ...guard,
        key,
      });
    } catch (error) {
      if (!(error instanceof RedisUnavailableError)) throw error;
      // The script may have run, or may still (a timeout; a connection lost once it was sent, whose
      // reply ioredis does not wait for again): drop that orphan reservation right behind it (same
      // connection, so in order; owner-checked) instead of letting it answer retries 409 for a lease.
      if (!didNotRun(error)) {
        record.release(o.redis, key, owner).catch(() => {});
      }
      return unavailable(req, res, next, error, key);
    }
    outages.end(key);

    // Answered while Redis was asked (a timeout guard fired): the request is over. A handler run now
    // could only fail to answer, holding the key for its whole ttl, and a replay or problem written
    // now would make Express drop the connection, and any request queued on it.
    if (res.writableEnded) {
      if (found.state !== 'reserved') return;
      void releaseKey({ o, emit, guard }, key, owner, res.statusCode, 'answered-before');
      return;
    }
    switch (found.state) {
      case 'reserved':
        emit('first');
        protect({ o, emit, guard }, req, res, key, { owner, fingerprint, forgotten: found.forgotten });
        return runningFor.run(new WeakRef(res), next);
      case 'done': {
        const coding = replay(res, found.response, o.maxBodySize * DECODED_BODY_FACTOR);
        if (coding === undefined) return emit('replay', { status: found.response.status });
        emit('replay-not-acceptable', { status: found.response.status, coding });
        return problem(
          res,
          406,
          'idempotency-replay-not-acceptable',
          'Stored response not acceptable',
          `The stored response is ${coding}-encoded and too large to decode for a client that does not accept ${coding}; retry with Accept-Encoding: ${coding}.`,
        );
      }
      case 'inflight':
        emit('conflict');
        markInProgress(res);
        return problem(
          res,
          409,
          'idempotency-conflict',
          'Request in progress',
          'A request with this idempotency key is still being processed; retry later.',
          true,
        );
      case 'mismatch':
        emit('mismatch');
        return problem(
          res,
          422,
          'idempotency-key-reused',
          'Idempotency key reused',
          'This idempotency key was already used with a different request payload.',
        );
    }
  }

  /**
   * No scope answer and no client address. A client that already hung up gets nothing (the handler
   * does not run: its retry will be the first run); otherwise the app cannot tell callers apart, so
   * the request is refused rather than run in a key space every such caller would share.
   */
  function unknownCaller(req: Request, res: Response): void {
    if (req.socket?.destroyed || res.destroyed) {
      emit('caller-gone');
      return;
    }
    emit('caller-unknown');
    emitWarningOnce(
      'ERK_IDEMPOTENCY_CALLER_UNKNOWN',
      () =>
        'express-redis-kit idempotency: a request with an idempotency key has no client address (req.ip) and no ' +
        "scope, so it was refused with 500: callers would share one key space and could replay each other's answers. " +
        'Behind a proxy on a Unix socket, set Express "trust proxy" so req.ip is the client (e.g. app.set("trust proxy", 1)), ' +
        'or pass a scope option (the user or account id). (Warned once.)',
    );
    problem(
      res,
      500,
      'idempotency-caller-unknown',
      'Caller unknown',
      'The server cannot tell this caller from others (no client address and no scope), so the request was not processed.',
    );
  }

  /** `key`: the record's Redis key, naming the node that failed (warned once per node and outage). */
  function unavailable(req: Request, res: Response, next: NextFunction, error: Error, key: string): void {
    // A timeout guard answered while Redis was asked: the request is over, as on the way in. Failing
    // open now would run the handler for an answer nobody gets, and the client's retry would run it again.
    if (res.writableEnded) {
      emit('unavailable', { error });
      return;
    }
    if (o.failMode === 'open') {
      emit('fail-open', { error });
      const started = outages.begin(key);
      if (started !== undefined) {
        const node = nodeField(started);
        process.emitWarning(
          `idempotency: Redis${node ? ` node ${node}` : ''} unavailable (${error.message}); running ${req.method} handlers without idempotency protection (failMode 'open').`,
          { code: 'ERK_IDEMPOTENCY_FAIL_OPEN' },
        );
      }
      next();
      return;
    }
    emit('unavailable', { error });
    problem(
      res,
      503,
      'idempotency-unavailable',
      'Idempotency store unavailable',
      'The request was not processed because exactly-once handling cannot be guaranteed right now; retry with the same key.',
      true,
    );
  }

  const middleware = function idempotencyMiddleware(req: Request, res: Response, next: NextFunction): void {
    handle(req, res, next).catch((error: unknown) => next(thrownError(error, 'idempotency')));
  } as IdempotencyMiddleware;

  Object.defineProperty(middleware, 'options', { value: Object.freeze({ ...o }), enumerable: true });
  middleware.forget = async (id: IdempotencyRecordId) => {
    // As resolveScope() reads what the `scope` option returned.
    const scope = scopePart(id.scope, COMPONENT);
    const scopes = scope !== undefined ? [`s:${scope}`] : sameAddress(id.ip ?? '').map((ip) => `ip:${ip}`);
    // Mounted with app.use, the namespace is the path as the router matches it (lower case, no
    // trailing slash, unless the app turned those settings on); on a route, the pattern as written.
    // forget() cannot tell which, so it tries the route as given and in the router's form.
    const loose = id.route.length > 1 ? id.route.toLowerCase().replace(/\/$/, '') : id.route;
    const routes = [...new Set([id.route, loose])];
    // One call per form: the scope is part of the hash tag, so the keys may live on several nodes.
    const deleted = await Promise.all(
      scopes.flatMap((scope) =>
        routes.map((route) => {
          const key = recordKey(o.prefix, scope, id.method ?? 'POST', route, id.key);
          return guarded(o.redis, () => record.forget(o.redis, key, o.ttlMs), { ...guard, key });
        }),
      ),
    );
    return deleted.some(Boolean);
  };
  return middleware;
}

/**
 * The scopes a record of address `ip` may be under: its one spelling (`clientAddress`), and those
 * `req.ip` had before an earlier kit version normalised it — on a dual-stack listener Node reports
 * `::ffff:203.0.113.7`, elsewhere `203.0.113.7` — for records it stored that are still live.
 */
function sameAddress(ip: string): string[] {
  const spellings = [clientAddress(ip), ip];
  if (ipaddr.isValid(ip)) {
    // process() turns an IPv4-mapped IPv6 address into the plain IPv4 one.
    const address = ipaddr.process(ip);
    if (address.kind() === 'ipv4') spellings.push(address.toString(), `::ffff:${address.toString()}`);
  }
  return [...new Set(spellings)];
}
