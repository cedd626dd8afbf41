import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Request } from 'express';
import parseRange from 'range-parser';
import type { Originals } from './capture';
import type { Entry } from './entry';
import { etagMatches, prepareHeaders } from './http';
import type { Rec } from './l1';

export type XCache = 'HIT' | 'MISS' | 'STALE' | 'BYPASS';

/**
 * Answers a request from a cached entry: 304 when it matches the request's conditionals, 206 for one
 * byte range of a stored 200 (416 when it lies beyond the body), else the stored status, headers and
 * body (none for HEAD). `via` is the response's own writeHead/end, or the
 * originals a capture saved (stale-if-error answers from inside the capture).
 */
export function respond(
  req: Request,
  res: ServerResponse,
  rec: Rec,
  xcache: XCache,
  now: number,
  via: Originals,
): void {
  rec.prepared ??= prepareHeaders(rec.entry);
  // A stale-if-error answer replaces an error the app had started: its reason phrase
  // ("Internal Server Error") must not go out with the stored 200. Empty means "the standard one".
  res.statusMessage = '';
  res.setHeader('X-Cache', xcache);
  const inCache = Math.max(0, Math.floor((now - rec.bornAt) / 1000));
  res.setHeader('Age', String((rec.entry.originAge ?? 0) + inCache));
  for (const name of rec.prepared.removed) res.removeHeader(name);
  const writeHead = via.writeHead as (
    status: number,
    ...rest: Array<string | Array<string | string[]>>
  ) => unknown;
  const end = via.end as (body?: Buffer) => unknown;
  if (notModified(req, rec.entry)) {
    writeHead.call(res, 304, rec.prepared.notModified);
    end.call(res);
    return;
  }
  const part = req.method === 'GET' ? rangeOf(req, rec.entry) : undefined;
  if (part === 'unsatisfiable') {
    writeHead.call(res, 416, ['content-range', `bytes */${rec.entry.body.length}`, 'content-length', '0']);
    end.call(res);
    return;
  }
  if (part) {
    const { start, end: last } = part;
    const size = rec.entry.body.length;
    // The stored headers minus their Content-Length (prepareHeaders puts it last).
    const headers = rec.prepared.full.slice(0, -2);
    headers.push(
      'content-range',
      `bytes ${start}-${last}/${size}`,
      'content-length',
      String(last - start + 1),
    );
    writeHead.call(res, 206, headers);
    end.call(res, rec.entry.body.subarray(start, last + 1));
    return;
  }
  const { status, message } = rec.entry;
  // With the reason phrase the route chose, when it was not the standard one.
  if (message) writeHead.call(res, status, message, rec.prepared.full);
  else writeHead.call(res, status, rec.prepared.full);
  end.call(res, req.method === 'HEAD' ? undefined : rec.entry.body);
}

/**
 * stale-if-error: the origin failed before sending anything; answers with the stale entry instead,
 * through the response's own methods (`originals`), with the headers as they were before the route
 * (`before`). True: answered.
 */
export function respondInstead(
  req: Request,
  res: ServerResponse,
  rec: Rec,
  before: OutgoingHttpHeaders,
  originals: Originals,
): true {
  // Exactly as before the route: the error path also rewrites and removes what front middleware set
  // (Express's error page sends `Content-Security-Policy: default-src 'none'`, which would block the
  // stale page's scripts and styles).
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  for (const [name, value] of Object.entries(before)) if (value !== undefined) res.setHeader(name, value);
  respond(req, res, rec, 'STALE', Date.now(), originals);
  return true;
}

/**
 * Whether a stored 200 answers a GET's or HEAD's conditionals with 304 (RFC 9110 §13.2.2):
 * `If-None-Match` by weak comparison; without it, `If-Modified-Since` against the stored
 * `Last-Modified`, as the origin's own `res.send`/`res.sendFile` would.
 */
function notModified(req: Request, entry: Entry): boolean {
  // Only GET and HEAD (RFC 9110 §13.1.2-3): a cached POST answers a conditional with its response.
  if (entry.status !== 200 || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
  const inm = req.headers['if-none-match'];
  if (inm !== undefined) return entry.etag !== undefined && etagMatches(inm, entry.etag);
  const ims = req.headers['if-modified-since'];
  return ims !== undefined && unmodifiedSince(entry, ims);
}

/** Whether the entry's `Last-Modified` is no later than the HTTP date `date` (false when either is missing or not a date). */
function unmodifiedSince(entry: Entry, date: string): boolean {
  const modified = entry.headers.find(([name]) => name === 'last-modified')?.[1];
  const since = Date.parse(date);
  return modified !== undefined && !Number.isNaN(since) && Date.parse(modified) <= since;
}

/**
 * The one byte range a hit answers with 206, as `send` (res.sendFile) would on the origin: only for
 * a stored 200, a single range (several, or a malformed header, get the whole 200, which HTTP
 * allows), and only while `If-Range` still names this entry (its strong ETag, or a date no older
 * than its Last-Modified).
 */
function rangeOf(req: Request, entry: Entry): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (entry.status !== 200 || req.headers.range === undefined) return undefined;
  // A compression middleware in front of the cache would encode the slice and leave Content-Range
  // naming identity bytes, which no client can put together: a part goes out only when the stored
  // body is already encoded (compression after the cache), or the client takes no other coding
  // (media players and download resumes send "identity", curl sends nothing).
  const encoded = entry.headers.some(
    ([name, value]) => name === 'content-encoding' && value.trim().toLowerCase() !== 'identity',
  );
  if (!encoded && acceptsCoding(req)) return undefined;
  const ifRange = req.get('if-range');
  if (ifRange !== undefined && !ifRangeHolds(ifRange, entry)) return undefined;
  // range-parser itself, not req.range(): Express 4 and 5.0 pin range-parser 1.2, which reads a
  // malformed header ("bytes=abc") as unsatisfiable, so the same request would get a 416 there.
  const ranges = parseRange(entry.body.length, req.headers.range, { combine: true });
  if (ranges === -1) return 'unsatisfiable';
  if (ranges === undefined || ranges === -2 || ranges.type !== 'bytes' || ranges.length !== 1)
    return undefined;
  return ranges[0];
}

function ifRangeHolds(ifRange: string, entry: Entry): boolean {
  const value = ifRange.trim();
  if (value.startsWith('"') || value.startsWith('W/')) {
    // Strong comparison (RFC 9110 §13.1.5): a weak validator never matches.
    return entry.etag !== undefined && !entry.etag.startsWith('W/') && value === entry.etag;
  }
  return unmodifiedSince(entry, value);
}

/**
 * Whether `Accept-Encoding` may let a compression middleware pick a coding other than identity. Read
 * as `compression()`'s negotiator reads it, and on the side of "yes" when in doubt: a coding counts as
 * refused only with a plain `q=0` (lower-case `q`, as the negotiator requires). Not through
 * `req.acceptsEncodings()`: Express's negotiator (1.x) refuses `gzip;Q=0`, compression's (0.6) does not.
 */
function acceptsCoding(req: Request): boolean {
  const header = req.headers['accept-encoding'];
  if (header === undefined) return false;
  for (const part of String(header).split(',')) {
    const [coding = '', ...params] = part.split(';').map((p) => p.trim());
    if (coding === '' || coding.toLowerCase() === 'identity') continue;
    const q = params.find((p) => p.startsWith('q='));
    if (q === undefined || !/^0(\.0{0,3})?$/.test(q.slice(2).trim())) return true;
  }
  return false;
}
