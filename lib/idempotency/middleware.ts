import { createHash, randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import ipaddr from 'ipaddr.js';
import { guarded } from '../breaker';
import { problemType, RedisTimeoutError, RedisUnavailableError, sendProblem } from '../errors';
import { emitKitEvent } from '../events';
import { scopePart } from '../keys';
import { nodeField, OutageTracker } from '../outage';
import { type CapturedResponse, captureResponse, DECODED_BODY_FACTOR, replay } from './capture';
import { watchTimeoutGuard } from './late-answer';
import { type IdempotencyOptions, type ResolvedIdempotencyOptions, resolveOptions } from './options';
import * as record from './record';
import { parseKey, recordKey, resolveScope, routeOf } from './request-key';

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
    const fingerprint = createHash('sha256').update(rawFingerprint).digest('hex');
    const key = recordKey(o.prefix, scope, req.method, routeOf(req), parsed.key);
    const owner = randomUUID();

    let found: record.ReserveResult;
    try {
      found = await guarded(o.redis, () => record.reserve(o.redis, key, fingerprint, owner, o.lockTtlMs), {
        ...guard,
        key,
      });
    } catch (error) {
      if (!(error instanceof RedisUnavailableError)) throw error;
      // The script may still run once Redis answers: drop that orphan reservation right behind it
      // (same connection, so in order) instead of letting it block retries for a whole lease.
      if (error instanceof RedisTimeoutError) {
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
      guarded(o.redis, () => record.release(o.redis, key, owner), { ...guard, key }).then(
        () => emit('released', { status: res.statusCode, reason: 'answered-before' }),
        (error: unknown) =>
          emit('release-failed', { status: res.statusCode, reason: 'answered-before', error }),
      );
      return;
    }
    switch (found.state) {
      case 'reserved':
        emit('first');
        protect(req, res, key, owner, fingerprint);
        return next();
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

  /** `key`: the record's Redis key, naming the node that failed (warned once per node and outage). */
  function unavailable(req: Request, res: Response, next: NextFunction, error: Error, key: string): void {
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

  /** Keeps the lease alive while the handler runs, then stores or releases the outcome. */
  function protect(req: Request, res: Response, key: string, owner: string, fingerprint: string): void {
    watchTimeoutGuard(req, res);
    const started = Date.now();
    let beating = false;
    let stopped = false;
    // Set when the connection closed mid-answer; from then on only a handler that keeps writing is
    // presumed alive (one that threw after writing never will).
    let brokenOff = false;
    let lastWrite = started;
    // Another request (or forget()) took the key: this one's answer must not be stored over it.
    let lost = false;
    // A timeout guard answered in the handler's place; the handler's own answer is awaited.
    let awaiting = false;
    const timer = setInterval(() => {
      // Cap: a handler that never ends its response must not hold the key forever.
      if (Date.now() - started > o.ttlMs) return stop();
      // Broken off, or answered by a timeout guard: the lease ends lockTtl after the last sign of
      // life, not a full lockTtl after the last renewal before it.
      const leaseMs = brokenOff ? Math.ceil(lastWrite + o.lockTtlMs - Date.now()) : o.lockTtlMs;
      if (leaseMs <= 0) return stop();
      if (beating) return;
      beating = true;
      guarded(o.redis, () => record.heartbeat(o.redis, key, owner, fingerprint, leaseMs), {
        ...guard,
        key,
      })
        .then((lease) => {
          if (lease === 'taken-back') emit('lease-restored');
          if (lease === 'lost' && !stopped) {
            lost = true;
            emit('lease-lost');
            stop();
          }
        })
        .catch((error: unknown) => emit('heartbeat-failed', { error }))
        .finally(() => {
          beating = false;
        });
    }, o.heartbeatMs);
    timer.unref?.();
    const stop = () => {
      stopped = true;
      clearInterval(timer);
    };

    // Exactly one outcome per reservation: the handler's end() or the connection closing mid-response.
    let settled = false;
    const release = async (status: number, reason: string) => {
      try {
        await guarded(o.redis, () => record.release(o.redis, key, owner), { ...guard, key });
        emit('released', { status, reason });
      } catch (error) {
        emit('release-failed', { status, reason, error });
      }
    };

    const storable = ({ status, body }: CapturedResponse) => body !== undefined && o.shouldStore(status);

    /**
     * A timeout guard (connect-timeout sets `req.timedout`) answered while the handler works on.
     * Releasing the key would let a retry run the handler alongside it: it stays in flight instead,
     * and the handler's own answer is stored when it comes (it never reaches this client). A handler
     * that stopped when the guard fired never answers: its lease then lapses lockTtl after the
     * guard's answer, as for a broken-off response.
     */
    const guardAnswered = (captured: CapturedResponse) =>
      !storable(captured) && !awaiting && !lost && (req as { timedout?: unknown }).timedout === true;

    /** Stores the answer, or releases the key when it is not one to store. */
    const settle = async (captured: CapturedResponse): Promise<void> => {
      const { status, body } = captured;
      if (body === undefined || !o.shouldStore(status)) {
        return release(status, body === undefined ? (captured.unstorable ?? 'too-large') : 'status');
      }
      // The client broke off its upload: whatever answers now (a body parser's 400 "request
      // aborted", a partial upload refused) follows from that, and its retry must run afresh.
      if (!req.complete && (req.destroyed || (req as { aborted?: boolean }).aborted)) {
        return release(status, 'request-aborted');
      }
      if (lost) return emit('lease-lost', { status });
      try {
        const lease = await guarded(
          o.redis,
          () =>
            record.complete(
              o.redis,
              key,
              owner,
              fingerprint,
              { status, message: captured.message, headers: captured.headers, body },
              o.ttlMs,
            ),
          { ...guard, key },
        );
        if (lease === 'taken-back') emit('lease-restored', { status });
        emit(lease === 'lost' ? 'lease-lost' : 'stored', { status });
      } catch (error) {
        emit('store-failed', { status, error });
      }
    };

    captureResponse(res, o.maxBodySize, {
      aborted: () => {
        if (settled) return;
        // The response broke off, but the handler may still be at work (a stream whose client left):
        // releasing now could run it twice at once. The lease is renewed while it keeps writing, and
        // its answer is stored if it ends; once it has been silent for lockTtl (it threw, or stopped
        // without end()), the lease lapses and a retry runs the handler again.
        brokenOff = true;
        lastWrite = Date.now();
        emit('abandoned', { status: res.statusCode, reason: 'aborted' });
      },
      wrote: () => {
        lastWrite = Date.now();
      },
      beforeEnd: async (captured: CapturedResponse) => {
        if (settled) return undefined;
        if (guardAnswered(captured)) {
          awaiting = true;
          brokenOff = true;
          lastWrite = Date.now();
          emit('awaiting-handler', { status: captured.status });
          return 'await-handler';
        }
        settled = true;
        stop();
        await settle(captured);
        return undefined;
      },
    });
  }

  const middleware = function idempotencyMiddleware(req: Request, res: Response, next: NextFunction): void {
    handle(req, res, next).catch(next);
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
          return guarded(o.redis, () => record.forget(o.redis, key), { ...guard, key });
        }),
      ),
    );
    return deleted.some(Boolean);
  };
  return middleware;
}

/**
 * The forms `req.ip` can take for one IPv4 client: on a dual-stack listener Node reports
 * `::ffff:203.0.113.7`, elsewhere `203.0.113.7`. An admin passing either finds the record.
 */
function sameAddress(ip: string): string[] {
  if (!ipaddr.isValid(ip)) return [ip];
  // process() turns an IPv4-mapped IPv6 address into the plain IPv4 one (the rate limiter does too).
  const address = ipaddr.process(ip);
  if (address.kind() !== 'ipv4') return [ip];
  const v4 = address.toString();
  return [...new Set([ip, v4, `::ffff:${v4}`])];
}
