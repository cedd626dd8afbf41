import type { Response } from 'express';
import { isEndChunk, writeHeadPairs } from '../chunks';
import { dropLate, type HeaderMap } from '../late-answers';
import { BodyCopy } from './body-copy';

/** The handler's own answer, copied after a timeout guard answered in its place. */
export interface LateAnswer {
  status: number;
  /** The reason phrase the handler chose, if any. */
  message: string | undefined;
  copy: BodyCopy;
}

type HeaderValue = number | string | readonly string[];

/**
 * A timeout guard (connect-timeout) answered for the handler while the handler works on; that answer
 * is out. The handler's own answer, which the kit would drop like Node drops a write after end
 * (lib/late-answers.ts), is copied instead, so the retry gets what the handler did rather than running
 * it a second time. From the moment the guard's answer has gone, the response takes the handler's
 * status, headers and body as a response not yet sent would (starting from the headers it had
 * before the handler ran), and `ended` gets them when the handler ends it. `ended` runs while the
 * response still shows the handler's headers, so it can read them with `res.getHeader()`; afterwards
 * the response is as it was sent, and later answers are dropped again. Nothing reaches the client.
 */
export function copyLateAnswer(
  res: Response,
  maxBodySize: number,
  before: HeaderMap,
  hooks: { wrote(): void; ended(answer: LateAnswer): void },
): void {
  let begun = false;
  // Listeners added before this one (loggers: morgan, pino-http) see the response as it was sent.
  const begin = () => {
    if (begun) return;
    begun = true;
    shadow(res, maxBodySize, before, hooks);
  };
  // Not `writableFinished`: it turns true as soon as the socket took the bytes, before 'finish'.
  if (res.destroyed) begin();
  else {
    res.once('finish', begin);
    res.once('close', begin);
  }
}

function shadow(
  res: Response,
  maxBodySize: number,
  before: HeaderMap,
  hooks: { wrote(): void; ended(answer: LateAnswer): void },
): void {
  const headers = new Map<string, HeaderValue>();
  for (const [name, value] of before) headers.set(name, value as HeaderValue);
  const copy = new BodyCopy(maxBodySize);
  // What loggers and the handler read: the status line sent, until the handler sets its own.
  const status = shadowField<number>(res, 'statusCode');
  const message = shadowField<string>(res, 'statusMessage');

  const kept = {
    write: res.write,
    end: res.end,
    writeHead: res.writeHead,
    setHeader: res.setHeader,
    appendHeader: res.appendHeader,
    getHeader: res.getHeader,
    getHeaders: res.getHeaders,
    getHeaderNames: res.getHeaderNames,
    hasHeader: res.hasHeader,
    removeHeader: res.removeHeader,
  };
  const set = (name: string, value: unknown) => {
    headers.set(name.toLowerCase(), Array.isArray(value) ? value.map(String) : (value as HeaderValue));
  };
  res.setHeader = function (this: Response, name: string, value: unknown) {
    set(name, value);
    return this;
  } as Response['setHeader'];
  res.appendHeader = function (this: Response, name: string, value: unknown) {
    const was = headers.get(name.toLowerCase());
    const added = Array.isArray(value) ? value.map(String) : [String(value)];
    set(name, was === undefined ? added : [...(Array.isArray(was) ? was : [String(was)]), ...added]);
    return this;
  } as Response['appendHeader'];
  res.getHeader = ((name: string) => headers.get(name.toLowerCase())) as Response['getHeader'];
  res.getHeaders = (() =>
    Object.assign(Object.create(null), Object.fromEntries(headers))) as Response['getHeaders'];
  res.getHeaderNames = () => [...headers.keys()];
  res.hasHeader = (name: string) => headers.has(name.toLowerCase());
  res.removeHeader = (name: string) => {
    headers.delete(name.toLowerCase());
  };
  res.writeHead = function (this: Response, code: number, ...rest: unknown[]) {
    status.value = code;
    if (typeof rest[0] === 'string') message.value = rest[0];
    for (const [name, value] of writeHeadPairs(rest.find((a) => a !== null && typeof a === 'object'))) {
      set(name, value);
    }
    return this;
  } as Response['writeHead'];
  res.write = function (this: Response, ...args: unknown[]) {
    copy.keep(args[0], args[1]);
    hooks.wrote();
    dropLate(args.slice(1));
    return true;
  } as Response['write'];
  res.end = function (this: Response, ...args: unknown[]) {
    // A chunk Node would refuse (a number): the answer cannot be known, so it is not stored.
    if (isEndChunk(args[0])) copy.keep(args[0], typeof args[1] === 'string' ? args[1] : undefined);
    else copy.lose('unreadable');
    try {
      hooks.ended({ status: status.value ?? 200, message: message.value, copy });
    } finally {
      Object.assign(res, kept);
      status.restore();
      message.restore();
      dropLate(args);
    }
    return this;
  } as Response['end'];
}

/**
 * Makes `res[name]` read as sent until something assigns it; `value` is what was assigned, and
 * `restore()` puts the sent value back as a plain property.
 */
function shadowField<T>(res: Response, name: 'statusCode' | 'statusMessage') {
  const sent = res[name] as T;
  const field: { value: T | undefined; restore(): void } = {
    value: undefined,
    restore: () =>
      Object.defineProperty(res, name, { configurable: true, enumerable: true, writable: true, value: sent }),
  };
  Object.defineProperty(res, name, {
    configurable: true,
    enumerable: true,
    get: () => field.value ?? sent,
    set: (value: T) => {
      field.value = value;
    },
  });
  return field;
}
