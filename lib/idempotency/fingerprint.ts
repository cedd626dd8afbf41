import { createHash } from 'node:crypto';
import type { Request } from 'express';
import { matchedPath } from './request-key';

/**
 * The default request fingerprint: SHA-256 (hex) of the method, the path as the router matches it,
 * the query parameters (sorted, so their order does not matter) and the body as a body parser left
 * it in `req.body`:
 * - a `Buffer` or string (`express.raw()`, `express.text()`) is hashed as its bytes;
 * - anything else (`express.json()`, `express.urlencoded()`) as canonical JSON, object keys sorted,
 *   so `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same payload;
 * - no `req.body` (no body parser ran, e.g. a streamed upload, or none matched its Content-Type): the
 *   bytes are unknown, so such a body is told apart by its `Content-Type` and `Content-Length` only.
 *   Pass your own `fingerprint` for them.
 */
export function defaultFingerprint(req: Request): string {
  const hash = createHash('sha256');
  const search = (req.originalUrl ?? req.url ?? '').split('?')[1];
  const query = new URLSearchParams(search ?? '');
  query.sort();
  hash.update(req.method).update('\0').update(matchedPath(req)).update('\0');
  // Two requests that differ only in `?amount=` are not the same operation.
  hash.update(query.toString()).update('\0');
  const body: unknown = req.body;
  if (body === undefined) {
    hash.update('none');
    // Unread, but there: two payloads of another type or size must still not replay each other.
    // Without a body this stays plain 'none', so records stored by earlier versions still match.
    const {
      'content-length': length,
      'content-type': type,
      'transfer-encoding': chunked,
    } = req.headers ?? {};
    if ((length !== undefined && length !== '0') || chunked !== undefined) {
      // A length only when the client gave one: chunked, or HTTP/2 without one, are the same unknown
      // (a proxy may turn one into the other). The type without spaces or case, as clients vary them.
      const media = (type ?? '').replace(/\s+/g, '').toLowerCase();
      hash.update(`\0${media}\0${length ?? ''}`);
    }
  } else if (Buffer.isBuffer(body)) hash.update('bytes\0').update(body);
  else if (typeof body === 'string') hash.update('bytes\0').update(body, 'utf8');
  else hash.update('json\0').update(canonicalJson(body), 'utf8');
  return hash.digest('hex');
}

/** JSON with the keys of every plain object sorted, so key order does not change the result. */
export function canonicalJson(value: unknown): string {
  return (
    JSON.stringify(value, (_key, v: unknown) => {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return v;
      const record = v as Record<string, unknown>;
      return Object.fromEntries(
        Object.keys(record)
          .sort()
          .map((k) => [k, record[k]]),
      );
    }) ?? 'undefined'
  );
}
