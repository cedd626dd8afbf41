import { createHash } from 'node:crypto';
import type { Request } from 'express';
import { emitWarningOnce } from '../logger';
import { QUERY_PARSER_LIMIT, sortQuery } from '../query-order';
import { hasBody } from '../request-body';
import { canonicalJson } from './canonical-json';
import { matchedPath } from './request-key';

/**
 * The default request fingerprint: SHA-256 (hex) of the method, the path (as the router matches it,
 * and as spelled when that differs), the query parameters (sorted by name, so the order of different
 * names does not matter) and the body as a body parser left it in `req.body`:
 * - a `Buffer` or string (`express.raw()`, `express.text()`) is hashed as its bytes;
 * - anything else (`express.json()`, `express.urlencoded()`) as canonical JSON, object keys sorted,
 *   so `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same payload;
 * - no `req.body` (no body parser ran, e.g. a streamed upload, or none matched its Content-Type): the
 *   bytes are unknown, so such a body is told apart by its `Content-Type` and `Content-Length` only.
 *   Pass your own `fingerprint` for them.
 *
 * Also, when sent, the headers an answer can be conditional on (`Range`, `If-Range`, `If-Match`,
 * `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`).
 */
export function defaultFingerprint(req: Request): string {
  const hash = createHash('sha256');
  const url = req.originalUrl ?? req.url ?? '';
  const at = url.indexOf('?');
  // All of it: a second "?" is part of the query (`?to=a&amount=10?x` has amount "10?x").
  const search = at < 0 ? '' : url.slice(at + 1);
  // Sorted as the cache key's query is (normaliseQuery), and like it kept as sent when it is longer
  // than parsers read.
  const broken = hasBrokenEscape(search);
  const query = search.split('&').length > QUERY_PARSER_LIMIT ? search : sortedQuery(search, broken);
  const path = matchedPath(req);
  hash.update(req.method).update('\0').update(path).update('\0');
  // Two requests that differ only in `?amount=` are not the same operation.
  hash.update(query.toString()).update('\0');
  // URLSearchParams reads every broken escape (%FF, %FE) as U+FFFD, where the app's parser may not:
  // such a query also counts as it was sent. Others hash as before, so stored records still match.
  if (broken) hash.update('raw\0').update(search).update('\0');
  const body: unknown = req.body;
  const { 'content-length': length, 'content-type': type } = req.headers ?? {};
  const sent = hasBody(req.headers);
  if (body === undefined || (sent && unreadOnExpress4(req, body))) {
    hash.update('none');
    // Unread, but there: two payloads of another type or size must still not replay each other.
    // Without a body this stays plain 'none', so records stored by earlier versions still match.
    if (sent) {
      // A length only when the client gave one: chunked, or HTTP/2 without one, are the same unknown
      // (a proxy may turn one into the other). The type without spaces or case, as clients vary them.
      const media = (type ?? '').replace(/\s+/g, '').toLowerCase();
      hash.update(`\0${media}\0${length ?? ''}`);
      if (PARSED_TYPES.test(media)) warnUnparsedOnce();
    }
  } else if (Buffer.isBuffer(body)) hash.update('bytes\0').update(body);
  else if (typeof body === 'string') hash.update('bytes\0').update(body, 'utf8');
  else hash.update('json\0').update(canonicalJson(body), 'utf8');
  // Only when there are some, so fingerprints of requests without files are as stored before.
  const files = uploadedFiles(req);
  if (files.length > 0) {
    hash.update('\0files');
    for (const file of files) hashFile(hash, file);
  }
  // The path as it was spelled, when the app's routing settings would read it otherwise: a Router
  // made with { caseSensitive, strict } may send `/Transfer` and `/transfer/` to other handlers than
  // `/transfer`, and from `app.use()` that cannot be seen. Such a key reused under another spelling
  // is then a 422, never the other handler's answer. Only then, so other fingerprints stay as stored.
  const spelled = `${req.baseUrl ?? ''}${req.path ?? ''}`;
  if (spelled !== path) hash.update('\0spelled\0').update(spelled);
  // The answer may depend on them (`res.sendFile`/`res.download` honour Range and conditionals on
  // any method): a 206 slice or an empty 304 must not replay to a retry that did not ask for it.
  // Only when sent, so other fingerprints stay as stored.
  for (const name of CONDITIONAL_HEADERS) {
    const value = req.headers?.[name];
    if (value !== undefined) hash.update(`\0${name}\0`).update(String(value).trim());
  }
  return hash.digest('hex');
}

/** Request headers an answer can be conditional on (RFC 9110 §13, §14.2). */
const CONDITIONAL_HEADERS = [
  'range',
  'if-range',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
] as const;

/**
 * The query's parameters, decoded, in sortQuery's order; `broken`: it holds a broken escape
 * (hasBrokenEscape). The order check reads each part as sent:
 * `qs` splits `a[b]=x]=y` at `]=`, which the decoded pair no longer shows.
 */
function sortedQuery(search: string, broken: boolean): URLSearchParams {
  const pairs = [...new URLSearchParams(search)];
  // URLSearchParams drops a leading "?" and empty parts; every other part is one pair, in order.
  const raw = (search.startsWith('?') ? search.slice(1) : search).split('&').filter((part) => part !== '');
  const items = pairs.map((pair, i) => ({ pair, raw: raw[i] ?? '' }));
  // A query with a broken escape needs no check: its fingerprint also holds the query as sent, so
  // two orders never share one. Sorted plainly, as by earlier versions, its records still match.
  const textOf = broken ? undefined : (item: (typeof items)[number]) => item.raw;
  return new URLSearchParams(sortQuery(items, (item) => item.pair[0], textOf).map((item) => item.pair));
}

interface UploadedFile {
  field: string;
  file: Record<string, unknown>;
}

/**
 * The files an upload parser took out of a multipart body: multer's `req.file` / `req.files` (a list,
 * or lists by field), express-fileupload's `req.files` (by field). `req.body` then holds only the
 * text fields, and one file would replay the answer to another.
 */
function uploadedFiles(req: Request): UploadedFile[] {
  const found: UploadedFile[] = [];
  const add = (file: unknown, field: string) => {
    if (file && typeof file === 'object') found.push({ field, file: file as Record<string, unknown> });
  };
  const { file, files } = req as { file?: unknown; files?: unknown };
  add(file, '');
  if (Array.isArray(files)) for (const f of files) add(f, '');
  else if (files && typeof files === 'object') {
    for (const field of Object.keys(files).sort()) {
      const value = (files as Record<string, unknown>)[field];
      for (const f of Array.isArray(value) ? value : [value]) add(f, field);
    }
  }
  return found;
}

/**
 * A file by its field, name, type and size, and its bytes when they are in memory (multer's memory
 * storage `buffer`, express-fileupload's `data`) or their digest (express-fileupload's `md5`). A file
 * on disk is not read (that would block the request path): its content is not compared.
 */
function hashFile(hash: ReturnType<typeof createHash>, { field, file }: UploadedFile): void {
  const text = (value: unknown) =>
    typeof value === 'string' || typeof value === 'number' ? String(value) : '';
  const parts = [field, file.fieldname, file.originalname ?? file.name, file.mimetype, file.size];
  hash.update(`\0${parts.map(text).join('\0')}\0`);
  const bytes = Buffer.isBuffer(file.buffer)
    ? file.buffer
    : Buffer.isBuffer(file.data)
      ? file.data
      : undefined;
  if (bytes && bytes.length > 0) hash.update('bytes\0').update(bytes);
  else if (typeof file.md5 === 'string') hash.update('md5\0').update(file.md5);
}

/** Bodies an Express body parser would have read: unread, they mean idempotency() ran before it. */
// The types express.json(), express.urlencoded() and express.text() read (with `type` for +json): a
// CSV or binary upload streamed by the handler on purpose must not be told it is misconfigured.
const PARSED_TYPES = /^(application\/([^;]*\+)?json|application\/x-www-form-urlencoded|text\/plain)(;|$)/;

function warnUnparsedOnce(): void {
  // Mounting idempotency() before express.json() is an easy slip, and a silent one: {"amount":99}
  // then replays the answer to {"amount":10} (same type, same length) instead of a 422.
  emitWarningOnce(
    'ERK_IDEMPOTENCY_BODY_UNREAD',
    () =>
      'express-redis-kit idempotency: a request with a JSON, form or plain-text body reached the default fingerprint ' +
      'before any body parser read it, so only its Content-Type and Content-Length tell payloads apart: a retry ' +
      'with another payload of the same size replays the first answer. Mount express.json() (or express.urlencoded(); ' +
      'for a JSON type other than application/json, express.json({ type })) before idempotency(), or pass a ' +
      'fingerprint option. (Warned once.)',
  );
}

/**
 * Whether a well-formed `%XX` escape of the query decodes to no UTF-8 (`%FF`). A `%` not followed by
 * two hex digits (`50%`) is read literally by every parser, so it stays as the previous version hashed it.
 */
function hasBrokenEscape(search: string): boolean {
  if (!search.includes('%')) return false;
  try {
    decodeURIComponent(search.replace(/%(?![0-9a-fA-F]{2})/g, '%25'));
    return false;
  } catch {
    return true;
  }
}

/**
 * body-parser 1.x (Express 4) leaves `req.body = {}` when no parser read the body (its type matched
 * none), where 2.x leaves it undefined. Hashed as JSON, every unread upload would be `{}`, and
 * different uploads with one key would replay each other. A body that was read has been consumed
 * (1.x also flags it `req._body`); a JSON `{}` that was read stays `{}`.
 */
function unreadOnExpress4(req: Request, body: unknown): boolean {
  if ((req as { _body?: unknown })._body === true || req.readableEnded) return false;
  if (typeof body !== 'object' || body === null) return false;
  const proto = Object.getPrototypeOf(body);
  return (proto === Object.prototype || proto === null) && Object.keys(body).length === 0;
}
