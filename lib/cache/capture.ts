import { type OutgoingHttpHeaders, type ServerResponse, STATUS_CODES } from 'node:http';
import { applyWriteHeadHeaders, chunkBytes, lengthMismatch } from '../chunks';
import { onWireClose } from '../connection-close';
import { etagMatches, refusal, strongEtag } from './http';
import { parseVary } from './key';

/** A response the route finished, as it may be stored. */
export interface Captured {
  status: number;
  /** A reason phrase the route chose other than the standard one for `status`. */
  message?: string | undefined;
  headers: OutgoingHttpHeaders;
  body: Buffer;
  etag: string;
}

/** The response's own methods, to answer with something else (a stale entry) instead of the origin. */
export interface Originals {
  writeHead: ServerResponse['writeHead'];
  end: ServerResponse['end'];
}

export interface CaptureOptions {
  maxBodySize: number;
  statuses: ReadonlySet<number>;
  ifNoneMatch: string | undefined;
  /**
   * Called when the origin answers 5xx, before anything was sent. Returning true means it answered
   * through `originals` instead; the origin's output is then swallowed.
   */
  onServerError?: (originals: Originals) => boolean;
  /** Only watch for a server error (`onServerError`): copy nothing, touch no header (a HEAD). */
  observeOnly?: boolean;
}

type Callback = (error?: Error | null) => void;
type Chunk = string | Buffer | Uint8Array;

/**
 * How much captured body, in the whole process, may wait in memory for clients that read slowly
 * or never (see res.write in captureResponse): beyond it, routes stream at their clients' pace again.
 */
export const unsentBudget = { limit: 64 * 1024 * 1024, used: 0 };

/** Node's own `writableNeedDrain` of the response (its getter, past the one set on the instance). */
function needsDrain(res: ServerResponse): boolean {
  for (let proto = Object.getPrototypeOf(res); proto; proto = Object.getPrototypeOf(proto)) {
    const getter = Object.getOwnPropertyDescriptor(proto, 'writableNeedDrain')?.get;
    if (getter) return Boolean(getter.call(res));
  }
  return false;
}

/**
 * Tees a response as it streams to the client: nothing is delayed, and buffering stops (the response
 * just passes through) as soon as it is known not to be storable — a refused status or header,
 * Server-Sent Events, or a body beyond `maxBodySize`. When the whole body arrives in one `end()`
 * (e.g. `res.send`/`res.json`), it also gets a strong ETag, and a matching `If-None-Match` turns it into
 * a 304. `done` runs once: with the response, or with undefined and a reason.
 */
export function captureResponse(
  res: ServerResponse,
  options: CaptureOptions,
  done: (captured: Captured | undefined, reason: string | undefined) => void,
): void {
  const originals: Originals = { writeHead: res.writeHead, end: res.end };
  const write = res.write;
  let decided = false;
  let capturing = !options.observeOnly;
  let swallowed = false;
  let reason: string | undefined;
  let chunks: Buffer[] = [];
  let size = 0;
  let finished = false;
  // Headers as the route left them, taken as they go out: middleware in front (compression) may change
  // them inside writeHead for the bytes it rewrites, while the body captured here is the route's own.
  let sent: OutgoingHttpHeaders | undefined;

  // Bytes written past a full socket while capturing (see res.write), until the response is over.
  let unsent = 0;
  // Over: writes after it (a route still streaming to a client that left) would never be given back.
  let over = false;
  // A pipelined answer still queued behind another on its connection gets neither 'finish' nor
  // 'close' when that connection dies: the connection's own 'close' settles it. (Not the request's:
  // Node emits that as soon as a body has been read.) Watched only once bytes are held back.
  const connection = res.req?.socket;
  let watching = false;
  let unwatchUnsent = () => {};
  const holdsBack = () =>
    capturing && !over && unsentBudget.used < unsentBudget.limit && connection?.destroyed !== true;
  const settleUnsent = () => {
    over = true;
    unsentBudget.used -= unsent;
    unsent = 0;
    unwatchUnsent();
  };
  res.once('finish', settleUnsent);
  res.once('close', settleUnsent);
  // The connection this response goes out on: its own socket once it has one (a background
  // refresh's is a sink, not the visitor's), else its request's (queued behind another).
  const wire = res.socket ?? connection;
  let unwatchWire = () => {};
  const finish = (captured: Captured | undefined) => {
    if (finished) return;
    finished = true;
    unwatchWire();
    done(captured, captured ? undefined : (reason ?? 'aborted'));
  };
  function gone(): void {
    finish(undefined);
  }
  // A finished body waits here until its headers have gone out: express-session adds its Set-Cookie
  // inside writeHead, possibly after an asynchronous save, i.e. after end() was called.
  let pending: Captured | undefined;
  const settle = (sent: ServerResponse) => {
    const captured = pending;
    pending = undefined;
    if (!captured) return;
    const why =
      sent.statusCode !== captured.status && sent.statusCode !== 304
        ? 'status'
        : refusal(sent, captured.status, options.statuses);
    if (why) reason = why;
    finish(why ? undefined : withLateVary(captured, sent));
  };
  const stop = (why: string) => {
    capturing = false;
    reason ??= why;
    chunks = [];
    // Known now not to be stored: say so at once. A stream (SSE, a large download) may run for
    // minutes, and until `done` runs, the fill lock and the requests coalesced behind it wait.
    if (!swallowed) finish(undefined);
  };
  const decide = (given: number) => {
    if (decided) return;
    decided = true;
    // Express 4 lets `res.status('200')` through as a string (Node makes it a number on the wire).
    const status = Number(given);
    if (status >= 500 && options.onServerError?.(originals)) {
      swallowed = true;
      stop('stale-if-error');
      return;
    }
    const why = refusal(res, status, options.statuses);
    // A server error says nothing about the next answer: its waiters retry rather than skip the lock.
    if (why) stop(why === 'status' && status >= 500 ? 'server-error' : why);
  };
  const push = (chunk: Chunk | undefined | null, encoding: unknown) => {
    if (!capturing || chunk === undefined || chunk === null) return;
    const buf = chunkBytes(chunk, encoding);
    size += buf.length;
    if (size > options.maxBodySize) stop('too-large');
    else chunks.push(buf);
  };

  res.writeHead = function writeHead(this: ServerResponse, status: number, ...rest: unknown[]) {
    if (!decided) {
      // Apply header arguments first, so the decision sees e.g. a Set-Cookie passed to writeHead.
      applyWriteHeadHeaders(this, rest);
      decide(status);
    }
    if (swallowed) return this;
    if (capturing && !this.headersSent) sent = this.getHeaders();
    const out = (originals.writeHead as (...a: unknown[]) => ServerResponse).call(this, status, ...rest);
    settle(this);
    return out;
  } as ServerResponse['writeHead'];

  res.write = function (this: ServerResponse, chunk: Chunk, encoding?: unknown, cb?: Callback) {
    if (!decided && !this.headersSent) decide(this.statusCode);
    if (swallowed) {
      const callback = typeof encoding === 'function' ? encoding : cb;
      if (typeof callback === 'function') process.nextTick(callback);
      return true;
    }
    push(chunk, encoding);
    const flowing = (write as (...a: unknown[]) => boolean).call(this, chunk, encoding, cb);
    if (flowing || !holdsBack()) return flowing;
    // While the body is being captured (at most maxBodySize), the route's stream is not held back by
    // this one client's socket: the fill, its lock and every request waiting on it (here and in the
    // other instances) would otherwise wait on a client that reads slowly or never (a pipelined
    // request behind an endless one). Node keeps the bytes until that socket takes them, counted
    // against a budget for the whole process; past it, the socket's pace applies again.
    const bytes = chunk === undefined || chunk === null ? 0 : chunkBytes(chunk, encoding).length;
    unsent += bytes;
    unsentBudget.used += bytes;
    if (!watching && connection) {
      watching = true;
      unwatchUnsent = onWireClose(connection, settleUnsent);
    }
    return true;
  } as ServerResponse['write'];
  const addTrailers = res.addTrailers;
  res.addTrailers = function (this: ServerResponse, headers: Parameters<ServerResponse['addTrailers']>[0]) {
    // Announced or not (the Trailer header is refused above), a hit could not send them.
    if (capturing) stop('trailers');
    return addTrailers.call(this, headers);
  };
  // pipe() and pipeline() also read this flag before their first write.
  Object.defineProperty(res, 'writableNeedDrain', {
    configurable: true,
    get(this: ServerResponse) {
      return holdsBack() ? false : needsDrain(this);
    },
  });

  res.end = function (this: ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown) {
    if (typeof chunk === 'function') {
      cb = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    const whole = !this.headersSent && chunks.length === 0 && size === 0;
    if (!decided) decide(this.statusCode);
    if (swallowed) {
      if (typeof cb === 'function') process.nextTick(cb as Callback);
      finish(undefined);
      return this;
    }
    push(chunk as Chunk | undefined, encoding);
    let captured: Captured | undefined;
    if (capturing) {
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      // The copy lives on in `body` alone: the response (kept while its client reads) must not hold both.
      chunks = [];
      const existing = this.getHeader('etag');
      // A weak one (Express's, send's) is replaced by a content hash only while it can still be; once
      // it went out with a streamed answer (res.sendFile), hits keep it, so that client's
      // If-None-Match still matches them.
      const keep = typeof existing === 'string' && (!existing.startsWith('W/') || !whole);
      const etag = keep ? existing : strongEtag(body);
      const headers = this.headersSent && sent ? sent : this.getHeaders();
      if (lengthMismatch(headers['content-length'], body.length, Number(this.statusCode), this))
        reason = 'incomplete';
      else {
        const status = Number(this.statusCode);
        const message = this.statusMessage;
        captured = { status, headers, body, etag };
        if (message && message !== STATUS_CODES[status]) captured.message = message;
      }
      if (captured && whole) {
        this.setHeader('ETag', etag);
        if (
          options.ifNoneMatch !== undefined &&
          captured.status === 200 &&
          etagMatches(options.ifNoneMatch, etag)
        ) {
          this.statusCode = 304;
          for (const name of ['content-type', 'content-length', 'transfer-encoding']) this.removeHeader(name);
          (originals.end as (...a: unknown[]) => ServerResponse).call(this, cb);
          pending = captured;
          if (this.headersSent) settle(this);
          return this;
        }
      }
    }
    const out = (originals.end as (...a: unknown[]) => ServerResponse).call(this, chunk, encoding, cb);
    if (!captured) finish(undefined);
    else {
      pending = captured;
      if (this.headersSent) settle(this);
    }
    return out;
  } as ServerResponse['end'];

  res.once('close', gone);
  // The client hung up before this was put in place (while the lookup was in flight): its 'close' has
  // come and gone, and end() on the destroyed response sends no headers. Nothing else would end the
  // fill: its lock renewed for good, and every later request for the URL waiting on its flight.
  if (res.destroyed) {
    gone();
    return;
  }
  // Queued behind another response (pipelining), only the connection's 'close' says it is over.
  unwatchWire = onWireClose(wire, gone);
}

/**
 * The captured headers plus any `Vary` name that middleware in front added as the headers went out
 * (an on-headers hook: `res.vary('Cookie')` in auth middleware). The stored entry's Vary is what
 * splits it per variant, so a name missing from it would serve one user's answer to another. Not
 * `Accept-Encoding`: compression() in front adds it there for the bytes it encodes, and the entry
 * holds the route's own bytes, encoded again for each hit.
 */
function withLateVary(captured: Captured, sent: ServerResponse): Captured {
  const stored = parseVary(captured.headers.vary);
  const late = parseVary(sent.getHeader('vary')).filter(
    (name) => name !== 'accept-encoding' && !stored.includes(name),
  );
  if (late.length === 0) return captured;
  return { ...captured, headers: { ...captured.headers, vary: [...stored, ...late].join(', ') } };
}
