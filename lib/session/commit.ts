import type { Request, Response } from 'express';
import type { Session, SessionData } from 'express-session';
import { refreshTicketOf } from '../cache/refresh';
import { refusedChunkError, refusedStatusError } from '../chunks';
import { holdAnswer, noteReplacedAnswer } from '../late-answers';
import { bodyOf, forgetInRequest, lifetimeOf, type Shape, sameLifetime, shapeOf } from './data';
import type { KitSessionStore } from './store';

/** What the session looked like when the handler got it. */
interface Snapshot extends Shape {
  id: string;
}

const snapshots = new WeakMap<Request, Snapshot>();

/** A request this long checks its session is still there before its cookie is re-sent. */
const SLOW_REQUEST_MS = 200;

/** Records the session as the handler receives it (or as `login()` left it). */
export function takeSnapshot(req: Request): void {
  if (req.session) snapshots.set(req, { id: req.sessionID, ...shapeOf(req.session) });
}

/**
 * express-session saves or touches the session inside `res.end()` *after* writing the status line and
 * most of the body, so a failing store can only be reported once a 200 is on the wire — the write is
 * lost silently. This hook runs first: when the handler ends the response, it saves (if the data
 * changed) or touches the session, and only then lets the response go out. On a store failure the
 * response is replaced by the 503 (`onUnavailable`) while headers can still change.
 *
 * Streamed responses (headers already sent before `end()`) fall back to express-session's own path.
 */
export function commitBeforeEnd(
  req: Request,
  res: Response,
  store: KitSessionStore,
  onUnavailable: (error: unknown) => void,
): void {
  takeSnapshot(req);
  const sessionEnd = res.end as (...a: unknown[]) => Response;
  res.end = function end(this: Response, ...args: unknown[]) {
    const refused = refusedChunkError(args[0]);
    // express-session's end() would send the headers before Node refuses the chunk, leaving Express
    // no way to answer. Refusing it here, untouched and synchronously, lets the app's error handler
    // answer (500), as without the kit; this hook stays in place for that answer.
    if (refused) throw refused;
    const badStatus = res.headersSent ? undefined : refusedStatusError(res.statusCode);
    if (badStatus) throw badStatus;
    res.end = sessionEnd;
    if (refreshTicketOf(req)) {
      // A cache's background refresh (stale-while-revalidate) replays a visitor's request through
      // the app, and its answer is stored for everyone: it carries no Set-Cookie (a rolling session
      // re-sends one on every answer, and such an answer is never stored), and writes nothing.
      return withoutSession(req, () => sessionEnd.apply(this, args));
    }
    const session = req.session as (Session & Partial<SessionData>) | undefined;
    let work: Promise<Outcome> | undefined;
    try {
      work = session && !res.headersSent ? persist(req, session, store) : undefined;
    } catch (error) {
      // A value JSON cannot encode (BigInt, a cycle): express-session's own end() would throw on it
      // too, and again in every error handler's answer, until the request hangs. Answer 500 instead.
      work = Promise.reject(error);
    }
    if (!work) return sessionEnd.apply(this, args);
    // While the save is pending the response must behave as sent (lib/late-answers.ts): Express's
    // final handler after `res.json(); throw` would otherwise answer over it, or throw from an
    // event callback once it has gone out.
    const held = holdAnswer(res);
    work.then(
      (outcome) =>
        held.release(() => {
          if (outcome !== 'no-cookie') return sessionEnd.apply(res, args);
          withoutSession(req, () => sessionEnd.apply(res, args));
        }),
      (error: unknown) =>
        held.release(() => {
          // The handler's end(cb) is owed its callback, as Node calls it: once this answer finishes.
          const callback = args.find((a) => typeof a === 'function') as (() => void) | undefined;
          if (callback) res.once('finish', callback);
          // Without a session, express-session neither sets the cookie nor retries the store.
          (req as { session?: unknown }).session = undefined;
          // The handler did answer: idempotency() mounted before this keeps that answer for the
          // retry, as one mounted after it already has (releasing the key would run it twice).
          noteReplacedAnswer(res, args);
          // The handler's body is replaced: sendProblem drops its entity headers (length, ETag...).
          onUnavailable(error);
        }),
    );
    return res;
  } as Response['end'];
}

/**
 * Runs express-session's end() with no session on the request: it then neither sets the cookie nor
 * saves (it reads req.session inside its end(), and in its header hook, run from it).
 */
function withoutSession<T>(req: Request, run: () => T): T {
  const session = req.session;
  (req as { session?: unknown }).session = undefined;
  try {
    return run();
  } finally {
    (req as { session?: unknown }).session = session;
  }
}

/** 'no-cookie': the session could not be checked, so its cookie is not re-sent (nothing to save). */
type Outcome = undefined | 'no-cookie';

/**
 * Writes what express-session will tell the browser about, and no more: the data when it changed;
 * a new lifetime (`cookie.maxAge`, "remember me") only when the cookie carrying it is sent. Otherwise
 * Redis and the browser disagree: an orphan key for a visitor who gets no cookie, or a key that
 * outlives the cookie (replayable after the browser dropped it).
 */
function persist(
  req: Request,
  session: Session & Partial<SessionData>,
  store: KitSessionStore,
): Promise<Outcome> | undefined {
  if (store.marks.wasDropped(session)) {
    // Its write (the handler's own save()) found it ended: no cookie for it, nothing to write.
    forgetInRequest(session);
    return undefined;
  }
  if (store.marks.isPersisted(session)) {
    // Touched on load, so nothing to write, but express-session re-sends a rolling cookie. The
    // request may have outlived a login or logout in another tab of the same browser (or its own
    // logoutAll()), which ended this session: re-sending its cookie would put the dead session back
    // over the new one. Ended by this process: known without asking. Else, for a slow request, one
    // TOUCH tells (a vanished session is dropped from the request, so no cookie goes out). So for a
    // login's new session that a racing later login ended by the cap (maxSessionsPerUser): its
    // cookie, arriving last, would replace the later one in the browser.
    if (store.endedLately(req.sessionID)) {
      forgetInRequest(session);
      return undefined;
    }
    if (!store.rolling || !store.marks.loadedAs(req, req.sessionID)) return undefined;
    if (store.marks.loadedBefore(req, SLOW_REQUEST_MS)) {
      return store.refresh(req.sessionID, session).then(
        () => undefined,
        // Nothing needed saving: the answer goes out as it is, only without the cookie that could
        // not be checked (the browser keeps the one it has).
        () => 'no-cookie' as const,
      );
    }
    return undefined;
  }
  const snapshot = snapshots.get(req);
  const body = bodyOf(session);
  // Changed since the handler got it, or since a `save()` of its own wrote it (a mark set, saved at
  // once for other tabs to see, and cleared before the end): Redis holds what that save wrote.
  const written = store.marks.writtenAs(session);
  const modified =
    snapshot?.id !== req.sessionID ||
    snapshot.body !== body ||
    (written !== undefined && written.body !== body);
  if (!modified) {
    const loaded = store.marks.loadedAs(req, req.sessionID);
    // An unchanged new session is not stored at all (saveUninitialized: false), and gets no cookie.
    if (!loaded && !store.marks.wasWritten(session)) return undefined;
    // A loaded session's cookie is re-sent only when rolling; a login's new one always is.
    if (loaded && !store.rolling) return undefined;
  }
  session.touch();
  // A new lifetime is written with the data: the next request reads it from the stored cookie.
  if (modified || !sameLifetime(snapshot?.lifetime, lifetimeOf(session))) {
    return new Promise<void>((resolve, reject) => {
      session.save((error?: unknown) => (error ? reject(error) : resolve()));
    }).then(() => {
      if (store.marks.wasDropped(session)) forgetInRequest(session);
      else persisted(store, session);
      return undefined;
    });
  }
  return store.refresh(req.sessionID, session).then(() => persisted(store, session));
}

function persisted(store: KitSessionStore, session: SessionData): undefined {
  store.marks.markPersisted(session);
  return undefined;
}
