import type { Response } from 'express';
import { chunkBytes, isEndChunk, writeHeadPairs } from '../chunks';
import type { StoredResponse } from './record';

/** The response as the handler produced it, at the moment it called `res.end()`. */
export interface CapturedResponse {
  status: number;
  headers: StoredResponse['headers'];
  /** The body bytes, or `undefined` when they could not be kept (see `unstorable`). */
  body: Buffer | undefined;
  /** Why `body` is missing: it grew past `maxBodySize`, or a chunk could not be decoded. */
  unstorable?: 'too-large' | 'unreadable';
}

/** What the capture reports to its owner. */
export interface CaptureHooks {
  /**
   * The handler ended the response: store or release the key. Runs before the real `end()`.
   * Must never reject and should be time-bounded.
   */
  beforeEnd(captured: CapturedResponse): Promise<void>;
  /** The response started but its connection closed before the handler ended it: nothing to store. */
  aborted(): void;
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
type Headers = StoredResponse['headers'];

/**
 * Wraps `res.write`/`res.end` to copy the body (up to `maxBodySize` bytes) and, when the handler
 * ends the response, runs `hooks.beforeEnd` (store or release the key) before the real `end()`, so a
 * client that has seen the response and retries always finds the stored record.
 */
export function captureResponse(res: Response, maxBodySize: number, hooks: CaptureHooks): void {
  const originalWrite = res.write;
  const originalEnd = res.end;
  const originalWriteHead = res.writeHead;
  let chunks: Buffer[] | undefined = [];
  let unstorable: CapturedResponse['unstorable'];
  let size = 0;
  let ended = false;
  // The headers as the handler left them when they went out: middleware in front (compression)
  // may add its own at that moment, describing bytes that are not the ones copied here.
  let sentHeaders: Headers | undefined;

  const drop = (why: NonNullable<CapturedResponse['unstorable']>) => {
    chunks = undefined;
    unstorable ??= why;
  };

  const keep = (chunk: unknown, encoding: unknown) => {
    if (!chunks || !chunk || typeof chunk === 'function') return;
    let bytes: Buffer;
    if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) return drop('unreadable');
    try {
      bytes = chunkBytes(chunk, encoding);
    } catch {
      // An unknown encoding: Node refuses the write too, and whatever gets sent is not known here.
      return drop('unreadable');
    }
    size += bytes.length;
    // Over the limit: stop copying at once instead of buffering a large download in memory.
    if (size > maxBodySize) drop('too-large');
    else chunks.push(bytes);
  };

  const snapshot = (writeHeadHeaders?: unknown) => {
    if (!res.headersSent) sentHeaders = storableHeaders(res, writeHeadHeaders);
  };

  const writeHead = function writeHead(this: Response, ...args: unknown[]) {
    snapshot(args.find((a, i) => i > 0 && a !== null && typeof a === 'object'));
    return (originalWriteHead as (...a: unknown[]) => Response).apply(this, args);
  } as Response['writeHead'];
  res.writeHead = writeHead;

  res.write = function write(this: Response, ...args: unknown[]) {
    keep(args[0], args[1]);
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
    ended = true;
    res.write = originalWrite;
    res.end = originalEnd;
    if (res.writeHead === writeHead) res.writeHead = originalWriteHead;
    keep(args[0], typeof args[1] === 'string' ? args[1] : undefined);
    const captured: CapturedResponse = {
      status: res.statusCode,
      headers: (res.headersSent && sentHeaders) || storableHeaders(res),
      body: chunks ? Buffer.concat(chunks) : undefined,
      ...(unstorable ? { unstorable } : {}),
    };
    chunks = undefined;
    const finish = () => {
      // The handler ended the response again meanwhile (a bug, but not ours to turn into an 'error' event).
      if (res.writableEnded) {
        const callback = args.find((a) => typeof a === 'function') as (() => void) | undefined;
        callback?.();
        return;
      }
      try {
        (originalEnd as (...a: EndArgs) => Response).apply(res, args);
      } catch (error) {
        // Thrown inside a promise callback it would be an unhandled rejection and a request never answered.
        res.destroy(error as Error);
      }
    };
    hooks.beforeEnd(captured).then(finish, finish);
    return this;
  } as Response['end'];

  // A response that started but never ended (the handler threw after writing, a stream's client went
  // away) has no end() call to wait for. One that has not started is left alone: the handler may
  // still be working, and its answer will be stored for the retry.
  res.once('close', () => {
    if (!ended && res.headersSent) hooks.aborted();
  });
}

/** The storable headers of `res`, plus those passed as the object/array argument of `writeHead`. */
function storableHeaders(res: Response, writeHeadHeaders?: unknown): Headers {
  const all = new Map<string, unknown>();
  for (const name of res.getHeaderNames()) all.set(name, res.getHeader(name));
  for (const [name, value] of writeHeadPairs(writeHeadHeaders)) all.set(name.toLowerCase(), value);
  const out: Headers = [];
  for (const [name, value] of all) {
    if (NOT_STORED.has(name) || value === undefined || value === null) continue;
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
