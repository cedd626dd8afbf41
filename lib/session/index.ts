import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express';
import expressSession, { type SessionData } from 'express-session';
import { problemType, RedisUnavailableError, SessionEndedError, sendProblem } from '../errors';
import { emitKitEvent } from '../events';
import { kitSessionCookies } from '../session-cookies';
import { checkLoginData, checkUserId } from './checks';
import { commitBeforeEnd, takeSnapshot } from './commit';
import { droppedOverHttp } from './cookie-options';
import { type RedisSessionOptions, resolveOptions } from './options';
import { sessionHandle } from './scripts';
import { noteSharedIndex, sessionSystem } from './shared-index';
import { KitSessionStore } from './store';
import { destroyUserSessions, listUserSessions, type SessionInfo } from './user-index';

export type { SessionCookieOptions } from './cookie-options';
export type { RedisSessionOptions } from './options';
export { KitSessionStore } from './store';
export type { SessionInfo } from './user-index';

declare module 'express-session' {
  interface SessionData {
    /** Set by `sessions.login(req, { userId })`; keys the per-user session index. */
    userId?: string;
  }
}

/**
 * Data stored in the session at login: `userId` (a number is stored as its text, as
 * `req.session.userId` reads it) plus anything else the app keeps there.
 */
export type LoginData = { userId: string | number } & Omit<Partial<SessionData>, 'userId' | 'cookie'> &
  Record<string, unknown>;

/** The middleware returned by {@link redisSession}, with its admin API. */
export interface RedisSessionMiddleware extends RequestHandler {
  /**
   * Logs the request in: regenerates the session id (against session fixation; the old id stops
   * working), stores `data` in the new session and indexes it under `data.userId`. Rejects with
   * `RedisUnavailableError` when Redis cannot answer — `handleErrors` turns that into a 503 — and with
   * `SessionEndedError` when a `logoutAll()`/`revoke()` for the user ended the new session before it
   * was written (`handleErrors`: 409; the user logs in again).
   */
  login(req: Request, data: LoginData): Promise<void>;
  /** Destroys the request's session and clears its cookie. */
  logout(req: Request, res: Response): Promise<void>;
  /** Destroys every session of the user, on every device. Resolves with how many were ended. */
  logoutAll(userId: string | number): Promise<number>;
  /** The user's live sessions, most recently seen first. */
  list(userId: string | number): Promise<SessionInfo[]>;
  /** Destroys one session of the user by its `list()` id (e.g. "sign out that device"). */
  revoke(userId: string | number, id: string): Promise<boolean>;
  /** The `list()` id of the request's session, to mark "this device". */
  idOf(req: Request): string | undefined;
  /**
   * Error middleware: answers `RedisUnavailableError` from `login`/`logout` with the 503 problem, and
   * `SessionEndedError` with a 409 one; passes anything else on.
   */
  handleErrors: ErrorRequestHandler;
  /** The express-session store, for tooling. */
  readonly store: KitSessionStore;
}

const FOREIGN_SESSION =
  'express-redis-kit redisSession: req.session was set before it by another session middleware (express-session, ' +
  'or another redisSession), whose session the browser presents here. Mount each on paths of its own (during a ' +
  'migration, express-session only on the routes it still serves).';

/** The session system of each redisSession()'s store (shared-index.ts, sessionSystem). */
const systems = new WeakMap<object, string>();

/** Whether the store that loaded this request's session (`req.sessionStore`) is `store`'s system. */
function sameSystem(loaded: unknown, store: KitSessionStore): loaded is KitSessionStore {
  if (loaded === store) return true;
  const theirs = typeof loaded === 'object' && loaded !== null ? systems.get(loaded) : undefined;
  return theirs !== undefined && theirs === systems.get(store);
}

/**
 * Sessions in Redis, secure by default: express-session with a store that runs every call through
 * the kit's timeout and circuit breaker, answers 503 when Redis is down or slow (never a fresh, empty
 * session), slides the expiry without rewriting data, and indexes sessions per user.
 */
export function redisSession(options: RedisSessionOptions): RedisSessionMiddleware {
  const o = resolveOptions(options);
  kitSessionCookies().add(o.name);
  noteSharedIndex(o.redis, o.prefix, o.name);
  const store = new KitSessionStore(o);
  systems.set(store, sessionSystem(o.redis, o.prefix, o.name));
  const indexSettings = {
    redis: o.redis,
    prefix: o.prefix,
    timeoutMs: o.timeoutMs,
    tombstoneMs: o.tombstoneMs,
    onEnding: (handles: readonly string[]) => store.noteEnded(handles),
    onEndFailed: (handles: readonly string[]) => store.unnoteEnded(handles),
  };
  const inner = expressSession({
    store,
    secret: o.secrets,
    name: o.name,
    // express-session resolves sameSite 'auto' per request; its types leave the word out.
    cookie: o.cookie as expressSession.CookieOptions,
    rolling: o.rolling,
    proxy: o.proxy,
    resave: false,
    saveUninitialized: false,
    unset: 'keep',
  });

  function unavailable(res: Response, error: unknown): void {
    const redisDown = error instanceof RedisUnavailableError;
    emitKitEvent({ component: 'session', type: redisDown ? 'unavailable' : 'error', error: error as Error });
    sendProblem(
      res,
      redisDown
        ? {
            type: problemType('session-store-unavailable'),
            title: 'Session store unavailable',
            status: 503,
            detail: 'Sessions cannot be read or saved right now. Please retry shortly.',
          }
        : {
            type: problemType('session-error'),
            title: 'Session error',
            status: 500,
            detail: 'The session could not be processed.',
          },
      redisDown ? { 'Retry-After': '1', 'Cache-Control': 'no-store' } : { 'Cache-Control': 'no-store' },
    );
  }

  let warnedNoCookie = false;
  const middleware = function redisSession(req: Request, res: Response, next: NextFunction): void {
    if (req.session && !sameSystem((req as { sessionStore?: unknown }).sessionStore, store)) {
      // Another session middleware ran first (express-session still mounted app-wide during a
      // migration): express-session would skip this request, and login()/logoutAll() would act on
      // sessions the browser never presents (logoutAll() ending none of the cookies it holds).
      next(new Error(FOREIGN_SESSION));
      return;
    }
    let proceeded = false;
    inner(req, res, (error?: unknown) => {
      if (proceeded) {
        // express-session reports store failures of streamed responses after the headers went out.
        if (error) emitKitEvent({ component: 'session', type: 'late-error', error: error as Error });
        return;
      }
      proceeded = true;
      if (error instanceof RedisUnavailableError) return unavailable(res, error);
      if (error) return next(error);
      if (req.session) commitBeforeEnd(req, res, store, (e) => unavailable(res, e));
      next();
    });
  } as RedisSessionMiddleware;

  middleware.login = async (req, data) => {
    checkLoginData(data);
    const dropped =
      warnedNoCookie || isSecureRequest(req, o.proxy) ? undefined : droppedOverHttp(o.name, o.cookie);
    if (dropped) {
      // The login "succeeds" and the next request is anonymous: no cookie was sent, or one the
      // browser drops.
      warnedNoCookie = true;
      process.emitWarning(
        `express-redis-kit redisSession: ${dropped.why}, but this login came over plain HTTP (as Express sees it), ` +
          "so the browser keeps no session cookie. Behind a TLS proxy, set app.set('trust proxy', …) (or the proxy option); " +
          `for local HTTP, ${dropped.fix}. (Warned once.)`,
        { code: 'ERK_SESSION_COOKIE_NOT_SENT' },
      );
    }
    const session = req.session;
    // The store that loaded it: this one's, or another redisSession()'s of the same system.
    const loaded = (req as { sessionStore?: unknown }).sessionStore;
    if (!sameSystem(loaded, store)) {
      throw new Error(
        session
          ? FOREIGN_SESSION
          : 'express-redis-kit: sessions.login() needs the redisSession middleware to run first.',
      );
    }
    try {
      // What session.regenerate() does (end the old session, generate a new one), with the old one
      // ended so that Redis refuses it under OOM: the login must not end it and then fail. After
      // logout() (or session.destroy()) earlier in this request there is no session to end.
      if (session) await loaded.remove(req.sessionID, { forLogin: true });
      (req as unknown as { sessionStore: { generate(req: Request): void } }).sessionStore.generate(req);
      const fresh = req.session;
      Object.assign(fresh, data, { userId: String(data.userId) });
      fresh.touch();
      if (!(await loaded.save(req.sessionID, fresh))) throw new SessionEndedError();
      loaded.marks.markPersisted(fresh);
      takeSnapshot(req);
    } catch (error) {
      // No half-logged-in session: without req.session no cookie is sent and nothing is saved.
      (req as { session?: unknown }).session = undefined;
      throw error;
    }
    emitKitEvent({ component: 'session', type: 'login' });
  };

  middleware.logout = async (req, res) => {
    if (typeof (res as Partial<Response> | undefined)?.clearCookie !== 'function') {
      // Checked first: the session must not end without its cookie being cleared.
      throw new TypeError(
        'express-redis-kit: sessions.logout(req, res) needs the response, to clear the cookie.',
      );
    }
    const session = req.session;
    if (session) {
      await new Promise<void>((resolve, reject) => session.destroy((e) => (e ? reject(e) : resolve())));
      emitKitEvent({ component: 'session', type: 'logout' });
    }
    const { path, domain, sameSite, httpOnly, secure, partitioned } = o.cookie;
    const secureNow = isSecureRequest(req, o.proxy);
    res.clearCookie(o.name, {
      path,
      domain,
      // 'auto' as express-session resolves it (the cookie library refuses the word itself).
      sameSite: sameSite === 'auto' ? (secureNow ? 'none' : 'lax') : sameSite,
      httpOnly,
      partitioned,
      // As express-session decided when it set the cookie: a browser ignores a clearing cookie whose
      // Secure flag differs from a __Host-/__Secure- cookie's rules.
      secure: secure === 'auto' ? secureNow : secure,
    });
  };

  middleware.logoutAll = async (userId) => {
    const ended = await destroyUserSessions(indexSettings, checkUserId(userId));
    emitKitEvent({ component: 'session', type: 'logout-all', sessions: ended });
    return ended;
  };

  // async, so a bad userId rejects like the other admin calls instead of throwing synchronously.
  middleware.list = async (userId) => listUserSessions(indexSettings, checkUserId(userId));

  middleware.revoke = async (userId, id) => {
    // A bad userId is refused whatever the id: a handle that is no session's merely ends nothing.
    const user = checkUserId(userId);
    if (typeof id !== 'string' || id === '') return false;
    return (await destroyUserSessions(indexSettings, user, id)) > 0;
  };

  middleware.idOf = (req) => (req.session && req.sessionID ? sessionHandle(req.sessionID) : undefined);

  middleware.handleErrors = function redisSessionErrors(error, _req, res, next) {
    if (error instanceof RedisUnavailableError && !res.headersSent) return unavailable(res, error);
    if (error instanceof SessionEndedError && !res.headersSent) {
      return sendProblem(
        res,
        {
          type: problemType('session-ended'),
          title: 'Session ended during login',
          status: 409,
          detail:
            'The new session was ended (log out everywhere, or a revoke) while this login was being saved; log in again.',
        },
        { 'Cache-Control': 'no-store' },
      );
    }
    next(error);
  };

  Object.defineProperty(middleware, 'store', { value: store, enumerable: true });
  return middleware;
}

/** express-session's rule for `secure: 'auto'` (its `proxy` option first, else Express's `req.secure`). */
function isSecureRequest(req: Request, proxy: boolean | undefined): boolean {
  if ((req.socket as { encrypted?: boolean }).encrypted) return true;
  if (proxy === false) return false;
  if (proxy !== true) return req.secure === true;
  const header = req.headers['x-forwarded-proto'];
  const proto = (Array.isArray(header) ? header[0] : header) ?? '';
  return proto.split(',')[0]!.trim().toLowerCase() === 'https';
}
