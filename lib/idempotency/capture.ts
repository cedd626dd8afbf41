import { type OutgoingHttpHeader, STATUS_CODES } from 'node:http';
import type { Response } from 'express';
import { applyWriteHeadHeaders, isEndChunk, refusedStatusError } from '../chunks';
import { onWireClose } from '../connection-close';
import {
  dropLate,
  type HeaderMap,
  headerMap,
  holdAnswer,
  type ReplacedAnswer,
  replacedAnswer,
} from '../late-answers';
import { isQuotaHeader } from '../quota-headers';
import { BodyCopy, type Unstorable } from './body-copy';
import { copyLateAnswer } from './late-answer';
import type { StoredResponse } from './record';
import { runningFor, watchSocketDestroy } from './socket-destroy';

/** The response as the handler produced it, at the moment it called `res.end()`. */
export interface CapturedResponse {
  status: number;
  /** The reason phrase, when the handler chose one other than the standard one for `status`. */
  message?: string;
  /** The headers the handler added or changed (those set before it, per request, are not its answer). */
  headers: StoredResponse['headers'];
  /** The body bytes, or `undefined` when they could not be kept (see `unstorable`). */
  body: Buffer | undefined;
  /** Why `body` is missing: it grew past `maxBodySize`, or a chunk could not be decoded. */
  unstorable?: Unstorable;
}

/** What the capture reports to its owner. */
export interface CaptureHooks {
  /**
   * The handler ended the response: store or release the key. Runs before the real `end()`.
   * Must never reject and should be time-bounded. → `'await-handler'` when this answer was a
   * timeout guard's and the handler is still at work: its own answer, when it ends it, is copied and
   * handed to `beforeEnd` again (it never reaches the client).
   */
  beforeEnd(captured: CapturedResponse): Promise<undefined | 'await-handler'>;
  /** The response started but its connection closed before the handler ended it. */
  aborted(): void;
  /** The handler wrote a body chunk (it is still at work, even if its client has gone). */
  wrote(): void;
  /**
   * The client left before any answer, and the handler has now started one that may never end
   * (`sendFile`, a piped stream). Alive while it keeps writing; one that ends is stored as usual.
   */
  mayNeverEnd(): void;
}

/*
 * Headers that describe one transfer rather than the resource, or must not be handed to a second
 * caller: they are not stored. Content-Length is recomputed from the stored body on replay.
 */
const NOT_STORED = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'date',
  'set-cookie',
  'idempotent-replayed',
  // Trailers are not stored: a replay must not announce what it never sends.
  'trailer',
]);

type EndArgs = [chunk?: unknown, encoding?: unknown, callback?: unknown];
type Headers = StoredResponse['headers'];

const sameValue = (a: unknown, b: unknown) =>
  a === b ||
  (Array.isArray(a) && Array.isArray(b) && a.join('\n') === b.join('\n')) ||
  String(a) === String(b);

/**
 * Wraps `res.write`/`res.end` to copy the body (up to `maxBodySize` bytes) and, when the handler
 * ends the response, runs `hooks.beforeEnd` (store or release the key) before the real `end()`, so a
 * client that has seen the response and retries always finds the stored record.
 */
export function captureResponse(res: Response, maxBodySize: number, hooks: CaptureHooks): void {
  // Headers set before the handler (a request id, CORS, rate-limit counters) describe this request,
  // not the answer: a replay keeps the retry's own. Only what the handler adds or changes is stored.
  const before = headerMap(res);
  const originalWrite = res.write;
  const originalEnd = res.end;
  const originalWriteHead = res.writeHead;
  const copy = new BodyCopy(maxBodySize);
  let ended = false;
  // The headers as the handler left them when they went out: middleware in front (compression)
  // may add its own at that moment, describing bytes that are not the ones copied here.
  let sentHeaders: Headers | undefined;

  const snapshot = () => {
    if (!res.headersSent) sentHeaders = storableHeaders(res, before);
  };
  // The client left before any answer (the handler was still at work). Two answers started after
  // that can never end: `sendFile`/`download` give up at once (ECONNABORTED), and a stream piped
  // into the gone socket stalls. From then on the handler is alive while it writes, and the lease
  // lapses lockTtl after its last write instead of lasting until `ttl`. Anything else it writes
  // (headers, a first chunk, then slow work and `end()`) is a normal answer, stored for the retry.
  let closedUnanswered = false;
  const mayNeverEnd = () => {
    if (!closedUnanswered || ended) return;
    closedUnanswered = false;
    hooks.mayNeverEnd();
  };
  res.on('pipe', mayNeverEnd);
  const sendFile = (res as { sendFile?: (...a: unknown[]) => void }).sendFile;
  if (typeof sendFile === 'function') {
    (res as { sendFile?: unknown }).sendFile = function sendFileAfterClose(
      this: Response,
      ...args: unknown[]
    ) {
      mayNeverEnd();
      return sendFile.apply(this, args);
    };
  }

  const writeHead = function writeHead(this: Response, status: unknown, ...rest: unknown[]) {
    // Applied here (as Node 22 does), so what is stored is what goes out, on every Node.
    if (!this.headersSent) applyWriteHeadHeaders(this, rest);
    snapshot();
    return (originalWriteHead as (...a: unknown[]) => Response).call(this, status, ...rest);
  } as Response['writeHead'];
  res.writeHead = writeHead;

  res.write = function write(this: Response, ...args: unknown[]) {
    copy.keep(args[0], args[1]);
    hooks.wrote();
    snapshot();
    return (originalWrite as (...a: unknown[]) => boolean).apply(this, args);
  } as Response['write'];

  res.end = function end(this: Response, ...args: EndArgs) {
    if (!isEndChunk(args[0])) {
      // Node refuses this chunk (e.g. a number) before writing anything: call the real end() now, so
      // its TypeError reaches Express as it would without the kit. The capture stays in place: the
      // error handler's answer is the one stored or released.
      return (originalEnd as (...a: EndArgs) => Response).apply(this, args);
    }
    const badStatus = this.headersSent ? undefined : refusedStatusError(this.statusCode);
    if (badStatus) throw badStatus;
    ended = true;
    copy.keep(args[0], typeof args[1] === 'string' ? args[1] : undefined);
    const replaced = replacedAnswer(res);
    const captured: CapturedResponse = replaced
      ? handlerAnswer(replaced, before, maxBodySize, res)
      : {
          status: res.statusCode,
          ...reasonPhrase(res.statusCode, res.statusMessage),
          headers: (res.headersSent && sentHeaders) || storableHeaders(res, before),
          ...copy.take({ length: res.getHeader('content-length'), status: res.statusCode, res }),
        };
    // Until the deferred end() runs, the response is over, as it would be without the kit: a second
    // answer is dropped like Node drops a write after end, and status/header changes are undone
    // (lib/late-answers.ts). Middleware mounted after this one may have wrapped writeHead
    // (on-headers: compression, response-time…): the deferred end() must still go through that wrapper.
    const held = holdAnswer(res);
    const headWas = held.kept.writeHead;
    const finish = () =>
      held.release(
        () => {
          // Ended by a path around res.end (a bug, but not ours to turn into an 'error' event).
          if (res.writableEnded) dropLate(args);
          // A layer in front that deferred its end (redisSession saves first, and may answer 503
          // instead) still has to write its answer, and guards the gap itself.
          else (originalEnd as (...a: EndArgs) => Response).apply(res, args);
        },
        {
          write: originalWrite,
          end: originalEnd,
          writeHead: headWas === writeHead ? originalWriteHead : headWas,
        },
      );
    hooks.beforeEnd(captured).then((then) => {
      finish();
      if (then !== 'await-handler') return;
      copyLateAnswer(res, {
        before,
        maxBodySize,
        wrote: () => hooks.wrote(),
        ended: ({ status, message, body }) => {
          const answer: CapturedResponse = {
            status,
            ...reasonPhrase(status, message),
            headers: storableHeaders(res, before),
            ...body,
          };
          void hooks.beforeEnd(answer);
        },
      });
    }, finish);
    return this;
  } as Response['end'];

  // The app (the handler, a guard in front) dropped the connection itself: no answer is coming, even
  // if nothing was sent. With res.destroy(), or through the request (req.destroy(), the usual way to
  // refuse an upload mid-stream) or its socket. A client going away calls none of them first: Node
  // destroys the request once the socket is already gone, and the socket with the error that ended
  // it, or after the client's end of the stream (its FIN).
  let destroyedHere = false;
  let live = true;
  const originalDestroy = res.destroy;
  res.destroy = function destroy(this: Response, ...args: unknown[]) {
    if (!ended) destroyedHere = true;
    return (originalDestroy as (...a: unknown[]) => Response).apply(this, args);
  } as Response['destroy'];
  const { req } = res;
  const socket = req?.socket;
  if (req) {
    const requestDestroy = req.destroy;
    req.destroy = function destroy(this: typeof req, ...args: unknown[]) {
      if (live && !ended && socket && !socket.destroyed) destroyedHere = true;
      return (requestDestroy as (...a: unknown[]) => typeof req).apply(this, args);
    } as typeof req.destroy;
  }
  const unwatch = socket
    ? watchSocketDestroy(socket, (args, destroyed) => {
        // Whose destroy: one made in another idempotent request's handler (its async context) is no
        // answer of this one's, which is still at work and keeps its key: a shared, pipelined
        // connection. One made in this request's context is its own, also while its response waits
        // behind another. One with no context (a guard's timer in front, the request stream's own
        // events, a library that drops it) counts when this response holds the connection.
        const mine = runningFor.getStore()?.deref();
        if (
          live &&
          !ended &&
          args[0] == null &&
          !destroyed.readableEnded &&
          (mine === res || (mine === undefined && res.socket === destroyed))
        )
          destroyedHere = true;
      })
    : undefined;

  // A response that started but never ended (the handler threw after writing, a stream's client went
  // away), or that the app destroyed, has no end() call to wait for; nor does a request whose body
  // broke off mid-upload, which can never complete (a handler reading it waits for ever). One that
  // has not started and that the client broke off is left alone: the handler may still be working,
  // and its answer will be stored for the retry (see closedUnanswered).
  let unwatchSocket = () => {};
  const closed = () => {
    if (!live) return;
    live = false;
    unwatch?.();
    unwatchSocket();
    if (ended) return;
    if (res.headersSent || destroyedHere || (req && !req.complete)) hooks.aborted();
    else closedUnanswered = true;
  };
  // The client may have left while the reservation was on its way: that 'close' has already come,
  // and without it an answer that cannot end would hold the key until `ttl`.
  if (res.destroyed) {
    closed();
    return;
  }
  res.once('close', closed);
  // Queued behind another response (pipelining), only the connection's 'close' says it is over.
  unwatchSocket = onWireClose(socket, closed);
}

/** The reason phrase, when the handler chose one other than the standard one for its status. */
function reasonPhrase(status: number, message: string | undefined): { message?: string } {
  return message && message !== STATUS_CODES[status] ? { message } : {};
}

/**
 * The handler's answer that a layer closer to it replaced (redisSession's 503 after a failed save):
 * stored in place of the replacement, so the retry gets it instead of running the handler again.
 */
function handlerAnswer(
  replaced: ReplacedAnswer,
  before: HeaderMap,
  maxBodySize: number,
  res: Response,
): CapturedResponse {
  const copy = new BodyCopy(maxBodySize);
  copy.keep(replaced.chunk, replaced.encoding);
  const { status } = replaced;
  return {
    status,
    ...reasonPhrase(status, replaced.message),
    headers: storableOf(replaced.headers, before),
    ...copy.take({
      length: replaced.headers.get('content-length') as OutgoingHttpHeader | undefined,
      status,
      res,
    }),
  };
}

/**
 * The storable headers of `res`, leaving out those still as they were `before` the handler ran.
 * One set before and removed by the
 * handler is stored with no value (`[]`), so the replay removes it too: Node sends no line for an
 * empty list, so a kit version that just sets it does the same.
 */
function storableHeaders(res: Response, before: HeaderMap): Headers {
  return storableOf(headerMap(res), before);
}

function storableOf(all: HeaderMap, before: HeaderMap): Headers {
  const out: Headers = [];
  for (const [name, value] of all) {
    if (NOT_STORED.has(name) || isQuotaHeader(name) || value === undefined || value === null) continue;
    if (before.has(name) && sameValue(before.get(name), value)) continue;
    out.push([name, Array.isArray(value) ? value.map(String) : String(value)]);
  }
  for (const name of before.keys())
    if (!all.has(name) && !NOT_STORED.has(name) && !isQuotaHeader(name)) out.push([name, []]);
  return out;
}
