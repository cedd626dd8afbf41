import type { Response } from 'express';
import type { StoredResponse } from './record';

/** The response as the handler produced it, at the moment it called `res.end()`. */
export interface CapturedResponse {
  status: number;
  headers: StoredResponse['headers'];
  /** The body bytes, or `undefined` when it grew past `maxBodySize`. */
  body: Buffer | undefined;
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
]);

type EndArgs = [chunk?: unknown, encoding?: unknown, callback?: unknown];

/**
 * Wraps `res.write`/`res.end` to copy the body (up to `maxBodySize` bytes) and, when the handler
 * ends the response, runs `beforeEnd` (store or release the key) before the real `end()`, so a
 * client that has seen the response and retries always finds the stored record.
 * `beforeEnd` must never reject and should be time-bounded.
 */
export function captureResponse(
  res: Response,
  maxBodySize: number,
  beforeEnd: (captured: CapturedResponse) => Promise<void>,
): void {
  const originalWrite = res.write;
  const originalEnd = res.end;
  let chunks: Buffer[] | undefined = [];
  let size = 0;

  const keep = (chunk: unknown, encoding: unknown) => {
    if (!chunks || chunk === undefined || chunk === null || typeof chunk === 'function') return;
    let bytes: Buffer;
    if (Buffer.isBuffer(chunk)) bytes = chunk;
    else if (typeof chunk === 'string') {
      bytes = Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
    } else if (chunk instanceof Uint8Array) bytes = Buffer.from(chunk);
    else return;
    size += bytes.length;
    // Over the limit: stop copying at once instead of buffering a large download in memory.
    if (size > maxBodySize) chunks = undefined;
    else chunks.push(Buffer.from(bytes));
  };

  res.write = function write(this: Response, ...args: unknown[]) {
    keep(args[0], args[1]);
    return (originalWrite as (...a: unknown[]) => boolean).apply(this, args);
  } as Response['write'];

  res.end = function end(this: Response, ...args: EndArgs) {
    res.write = originalWrite;
    res.end = originalEnd;
    keep(args[0], typeof args[1] === 'string' ? args[1] : undefined);
    const captured: CapturedResponse = {
      status: res.statusCode,
      headers: storableHeaders(res),
      body: chunks ? Buffer.concat(chunks) : undefined,
    };
    chunks = undefined;
    const finish = () => {
      // The handler ended the response again meanwhile (a bug, but not ours to turn into an 'error' event).
      if (res.writableEnded) {
        const callback = args.find((a) => typeof a === 'function') as (() => void) | undefined;
        callback?.();
        return;
      }
      (originalEnd as (...a: EndArgs) => Response).apply(res, args);
    };
    beforeEnd(captured).then(finish, finish);
    return this;
  } as Response['end'];
}

function storableHeaders(res: Response): StoredResponse['headers'] {
  const out: StoredResponse['headers'] = [];
  for (const name of res.getHeaderNames()) {
    if (NOT_STORED.has(name)) continue;
    const value = res.getHeader(name);
    if (value === undefined) continue;
    out.push([name, Array.isArray(value) ? value.map(String) : String(value)]);
  }
  return out;
}

/** Sends a stored response again, byte for byte, marked `Idempotent-Replayed: true`. */
export function replay(res: Response, stored: StoredResponse): void {
  res.status(stored.status);
  for (const [name, value] of stored.headers) res.setHeader(name, value);
  res.setHeader('Idempotent-Replayed', 'true');
  res.end(stored.body);
}
