import type { OutgoingHttpHeader, ServerResponse } from 'node:http';
/**
 * Whether Node's `res.end(chunk)` accepts this first argument: it skips falsy ones and callbacks, and
 * takes strings and bytes. Wrappers that defer the real `end()` check this first, because Node's
 * TypeError thrown later, inside a promise callback, would leave the request unanswered.
 */
export function isEndChunk(chunk: unknown): boolean {
  return !chunk || typeof chunk === 'function' || typeof chunk === 'string' || chunk instanceof Uint8Array;
}

/** The TypeError Node's `res.end(chunk)` would throw for this chunk (`ERR_INVALID_ARG_TYPE`), if any. */
export function refusedChunkError(chunk: unknown): TypeError | undefined {
  if (isEndChunk(chunk)) return undefined;
  const received =
    typeof chunk === 'object'
      ? `an instance of ${(chunk as object).constructor?.name ?? 'Object'}`
      : `type ${typeof chunk} (${String(chunk)})`;
  const error = new TypeError(
    `The "chunk" argument must be of type string or an instance of Buffer or Uint8Array. Received ${received}`,
  );
  return Object.assign(error, { code: 'ERR_INVALID_ARG_TYPE' });
}

/**
 * A copy of a body chunk as bytes, decoded with `encoding` when it is a string: captures keep it until
 * the response ends, and the app may reuse its buffer once the write callback fired. Throws for an
 * unknown encoding, as Node's own write would.
 */
export function chunkBytes(chunk: string | Uint8Array, encoding: unknown): Buffer {
  return typeof chunk === 'string'
    ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
    : Buffer.from(chunk);
}

/** The headers argument of `writeHead`: `{ name: value }`, `[name, value, ...]` or `[[name, value], ...]`. */
export function writeHeadPairs(headers: unknown): Array<[string, unknown]> {
  if (!headers || typeof headers !== 'object') return [];
  if (!Array.isArray(headers)) return Object.entries(headers);
  if (Array.isArray(headers[0])) return (headers as unknown[][]).map(([k, v]) => [String(k), v]);
  const pairs: Array<[string, unknown]> = [];
  for (let i = 0; i + 1 < headers.length; i += 2) pairs.push([String(headers[i]), headers[i + 1]]);
  return pairs;
}

/**
 * Takes the headers argument off a `writeHead(status[, message][, headers])` call's arguments after
 * the status (`rest`, changed in place) and sets them on `res` as Node 22's writeHead does: a list
 * replaces each name it carries, and repeats of a name in it add values (two `Link`s); an object
 * sets. Node 20 keeps only a repeat's last value once any header was set, so captures apply them
 * themselves: the response and its stored copy then carry the same headers on every Node.
 */
export function applyWriteHeadHeaders(
  res: { setHeader(name: string, value: never): unknown; appendHeader(name: string, value: never): unknown },
  rest: unknown[],
): void {
  const last = rest[rest.length - 1];
  if (rest.length === 0 || last === null || typeof last !== 'object') return;
  rest.pop();
  const listed = new Set<string>();
  for (const [k, v] of writeHeadPairs(last)) {
    if (v === undefined) continue;
    if (!Array.isArray(last)) res.setHeader(k, v as never);
    else if (listed.has(k.toLowerCase())) res.appendHeader(k, v as never);
    else {
      listed.add(k.toLowerCase());
      res.setHeader(k, v as never);
    }
  }
}

/**
 * The RangeError Node's writeHead would throw for this status (`ERR_HTTP_INVALID_STATUS_CODE`), if
 * any. Express 4's `res.status()` takes anything (`res.status(err.status)` with no status on the
 * error): wrappers that defer the real `end()` throw it first, so the app's error handler answers.
 */
export function refusedStatusError(status: unknown): RangeError | undefined {
  const code = (status as number) | 0;
  if (code >= 100 && code <= 999) return undefined;
  return Object.assign(new RangeError(`Invalid status code: ${String(status)}`), {
    code: 'ERR_HTTP_INVALID_STATUS_CODE',
  });
}

/**
 * Whether the body an answer ended with is not the `Content-Length` it declared: a stream that broke
 * off (a file cut short while `res.sendFile` read it), or a wrong length the route set. Its client saw
 * a truncated (or overlong) answer; stored, it would go to every later client as a complete one (RFC
 * 9111 §3.3), the length recomputed. HEAD, 204 and 304 carry no body.
 */
export function lengthMismatch(
  declared: OutgoingHttpHeader | undefined,
  size: number,
  status: number,
  res: ServerResponse,
): boolean {
  if (declared === undefined || res.req?.method === 'HEAD') return false;
  if (status === 204 || status === 304) return false;
  const length = Number(Array.isArray(declared) ? declared[0] : declared);
  return Number.isSafeInteger(length) && length !== size;
}
