import { validateHeaderName, validateHeaderValue } from 'node:http';
import type { Request, Response } from 'express';
import { applyWriteHeadHeaders, isEndChunk } from '../chunks';
import { dropLate, type HeaderMap, headerMap } from '../late-answers';
import { BodyCopy } from './body-copy';

/** The handler's own answer, copied after a timeout guard answered in its place. */
export interface LateAnswer {
  status: number;
  /** The reason phrase the handler chose, if any. */
  message: string | undefined;
  /** The body, or why there is none. */
  body: ReturnType<BodyCopy['take']>;
}

/** One idempotency middleware waiting for the handler's own answer. */
export interface LateListener {
  /** Headers set before that middleware ran: not part of the handler's answer. */
  before: HeaderMap;
  maxBodySize: number;
  wrote(): void;
  /** The handler ended its answer; runs while `res.getHeader()` still shows the answer's headers. */
  ended(answer: LateAnswer): void;
}

/** The status line and headers the handler had set when the guard fired. */
interface Started {
  status: number;
  message: string;
  headers: HeaderMap;
}

type HeaderValue = number | string | string[];
type Kit = { [STARTED]?: Started | null; [SHADOW]?: Shadow };

/** The response's own events of its end: their listeners read the answer that was sent. */
const ENDING = new Set<string | symbol>(['prefinish', 'finish', 'close']);

const STARTED = Symbol('express-redis-kit.answer-when-guard-fired');
const SHADOW = Symbol('express-redis-kit.late-answer');

/**
 * Notes, when a timeout guard fires (connect-timeout sets `req.timedout = true` before its error
 * handler writes the 503), the status and headers the handler had set so far: its late answer
 * starts from them, not from the guard's.
 */
export function watchTimeoutGuard(req: Request, res: Response): void {
  const kit = req as Request & Kit;
  if (STARTED in kit) return;
  const own = Object.getOwnPropertyDescriptor(req, 'timedout');
  // Someone else's accessor, or a frozen flag: leave it; the late answer then starts afresh.
  if (own && (!own.configurable || own.get || own.set)) return;
  kit[STARTED] = null;
  let value = own?.value as unknown;
  Object.defineProperty(req, 'timedout', {
    configurable: true,
    enumerable: true,
    get: () => value,
    set: (next: unknown) => {
      if (next === true && value !== true && !res.headersSent) {
        kit[STARTED] = { status: res.statusCode, message: res.statusMessage, headers: headerMap(res) };
      }
      value = next;
    },
  });
}

/**
 * A timeout guard (connect-timeout) answered for the handler while the handler works on, and that
 * answer is on its way. The handler's own answer, which would be dropped like a write after end
 * (lib/late-answers.ts), is copied instead, so the retry gets what the handler did rather than
 * running it a second time. Once the guard's headers are out, the response takes the handler's
 * status, headers and body as a response not yet sent would, starting from what the handler had set
 * when the guard fired; `listener.ended` gets them when the handler ends it. Nothing more reaches
 * the client. Listeners of 'finish' and 'close' still read the answer that was sent.
 */
export function copyLateAnswer(res: Response, listener: LateListener): void {
  const kit = res as Response & Kit;
  const shadow = kit[SHADOW];
  if (shadow) {
    // A second idempotency middleware on this request: one copy serves both. Its own end may have
    // put the dropping methods back over the copying ones.
    shadow.add(listener);
    shadow.apply();
    return;
  }
  const created = new Shadow(res, (res.req as Request & Kit)[STARTED] ?? undefined, listener);
  kit[SHADOW] = created;
  // Before the guard's headers are out, Node (and compression, express-session) still call the
  // response's own header methods to write them; a layer in front may still be holding the end.
  if (res.headersSent || res.destroyed) created.apply();
  else {
    const begin = () => {
      // Inside this 'finish'/'close' dispatch: the listeners after this one read what was sent.
      created.showSent(() => created.apply());
    };
    res.once('finish', begin);
    res.once('close', begin);
  }
}

class Shadow {
  private readonly waiting: Array<{ listener: LateListener; copy: BodyCopy }> = [];
  private readonly headers = new Map<string, HeaderValue>();
  /** The answer that went out, read when the copying begins. */
  private sent: { status: number; message: string; headers: HeaderMap } = {
    status: 0,
    message: '',
    headers: new Map(),
  };
  private status: number | undefined;
  private message: string | undefined;
  /** > 0 while 'finish' or 'close' listeners run: they read the answer that was sent. */
  private showingSent = 0;
  private applied = false;
  private kept: Partial<Record<keyof Response, unknown>> = {};

  constructor(
    private readonly res: Response,
    private readonly started: Started | undefined,
    first: LateListener,
  ) {
    this.add(first);
    for (const [name, value] of started?.headers ?? first.before)
      this.headers.set(name, value as HeaderValue);
  }

  add(listener: LateListener): void {
    this.waiting.push({ listener, copy: new BodyCopy(listener.maxBodySize) });
  }

  /** Runs `fn` with reads showing the answer sent, and keeps showing it for the rest of this dispatch. */
  showSent(fn: () => void): void {
    this.showingSent++;
    queueMicrotask(() => this.showingSent--);
    fn();
  }

  /** The handler's status: set late, else as it was when the guard fired, else Node's default. */
  private get lateStatus(): number {
    return this.status ?? this.started?.status ?? 200;
  }

  /** Puts the copying methods in place (again). */
  apply(): void {
    const res = this.res;
    const shadow = this;
    if (!this.applied) {
      this.applied = true;
      this.sent = { status: res.statusCode, message: res.statusMessage, headers: headerMap(res) };
      for (const name of METHODS) this.kept[name] = res[name];
      this.shadowStatusLine();
      const emit = res.emit;
      this.kept.emit = emit;
      res.emit = function (this: Response, event: string | symbol, ...args: unknown[]) {
        if (!ENDING.has(event)) return emit.call(this, event, ...args);
        let result = false;
        shadow.showSent(() => {
          result = emit.call(this, event, ...args);
        });
        return result;
      } as Response['emit'];
    }
    const headers = this.headers;
    const view = (): Map<string, unknown> => (this.showingSent > 0 ? this.sent.headers : headers);
    const set = (name: string, value: unknown) => {
      // As Node checks them: a value it would refuse must not be stored and break every replay.
      validateHeaderName(name);
      validateHeaderValue(name, value as string);
      headers.set(name.toLowerCase(), Array.isArray(value) ? value.map(String) : (value as HeaderValue));
    };
    res.setHeader = function (this: Response, name: string, value: unknown) {
      set(name, value);
      return this;
    } as Response['setHeader'];
    res.setHeaders = function (this: Response, all: Headers | Map<string, unknown>) {
      for (const [name, value] of all) set(name, value);
      return this;
    } as Response['setHeaders'];
    res.appendHeader = function (this: Response, name: string, value: unknown) {
      const was = headers.get(name.toLowerCase());
      const added = Array.isArray(value) ? value.map(String) : [String(value)];
      set(name, was === undefined ? added : [...(Array.isArray(was) ? was : [String(was)]), ...added]);
      return this;
    } as Response['appendHeader'];
    res.getHeader = ((name: string) => view().get(name.toLowerCase())) as Response['getHeader'];
    res.getHeaders = (() =>
      Object.assign(Object.create(null), Object.fromEntries(view()))) as Response['getHeaders'];
    res.getHeaderNames = () => [...view().keys()];
    res.hasHeader = (name: string) => view().has(name.toLowerCase());
    res.removeHeader = (name: string) => {
      headers.delete(name.toLowerCase());
    };
    res.writeHead = function (this: Response, code: number, ...rest: unknown[]) {
      checkStatus(code);
      // Through the shadow's own setHeader/appendHeader, as the capture applies them.
      applyWriteHeadHeaders(this, rest);
      shadow.status = code;
      if (typeof rest[0] === 'string') shadow.message = rest[0];
      return this;
    } as Response['writeHead'];
    res.write = function (this: Response, ...args: unknown[]) {
      shadow.keep(args[0], args[1]);
      dropLate(args.slice(1));
      return true;
    } as Response['write'];
    res.end = function (this: Response, ...args: unknown[]) {
      shadow.end(args);
      return this;
    } as Response['end'];
  }

  private keep(chunk: unknown, encoding: unknown): void {
    for (const { listener, copy } of this.waiting) {
      copy.keep(chunk, encoding);
      listener.wrote();
    }
  }

  /** The body sent cannot be known: no listener stores it. */
  private lose(): void {
    for (const { copy } of this.waiting) copy.lose('unreadable');
  }

  private end(args: unknown[]): void {
    const status = this.lateStatus;
    // Where Node would throw, writing the status line: a status it refuses must not be stored.
    checkStatus(status);
    // A chunk Node would refuse (a number): the answer cannot be known, so it is not stored.
    if (isEndChunk(args[0])) this.keep(args[0], typeof args[1] === 'string' ? args[1] : undefined);
    else this.lose();
    const message =
      this.message ?? (this.started && this.started.status === status ? this.started.message : undefined);
    try {
      const declared = { length: this.res.getHeader('content-length'), status, res: this.res };
      for (const { listener, copy } of this.waiting) {
        listener.ended({ status, message, body: copy.take(declared) });
      }
    } finally {
      this.restore();
      dropLate(args);
    }
  }

  /** `statusCode`/`statusMessage` read as sent to 'finish'/'close' listeners, else as the handler set them. */
  private shadowStatusLine(): void {
    Object.defineProperty(this.res, 'statusCode', {
      configurable: true,
      enumerable: true,
      get: () => (this.showingSent > 0 ? this.sent.status : this.lateStatus),
      set: (value: number) => {
        this.status = value;
      },
    });
    Object.defineProperty(this.res, 'statusMessage', {
      configurable: true,
      enumerable: true,
      get: () => (this.showingSent > 0 ? this.sent.message : (this.message ?? '')),
      set: (value: string) => {
        this.message = value;
      },
    });
  }

  /** The response as it was sent, later answers dropped again. */
  private restore(): void {
    const res = this.res;
    Object.assign(res, this.kept);
    for (const [name, value] of [
      ['statusCode', this.sent.status],
      ['statusMessage', this.sent.message],
    ] as const) {
      Object.defineProperty(res, name, { configurable: true, enumerable: true, writable: true, value });
    }
    delete (res as Response & Kit)[SHADOW];
  }
}

/** Throws Node's `ERR_HTTP_INVALID_STATUS_CODE` for a status it would not send. */
function checkStatus(code: unknown): void {
  const status = Number(code) | 0;
  if (status >= 100 && status <= 999) return;
  throw Object.assign(new RangeError(`Invalid status code: ${String(code)}`), {
    code: 'ERR_HTTP_INVALID_STATUS_CODE',
  });
}

const METHODS = [
  'write',
  'end',
  'writeHead',
  'setHeader',
  'setHeaders',
  'appendHeader',
  'getHeader',
  'getHeaders',
  'getHeaderNames',
  'hasHeader',
  'removeHeader',
] as const;
