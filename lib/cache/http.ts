import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Request } from 'express';
import { hashPart } from '../keys';
import { isQuotaHeader } from '../quota-headers';
import type { Entry } from './entry';
import { parseVary } from './key';

/** Never stored: per-connection (hop-by-hop), per-response (Date, Age, X-Cache) or recomputed on a hit. */
const NEVER_STORED = new Set([
  'set-cookie',
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'date',
  'age',
  'x-cache',
  'content-length',
  'etag',
]);

function neverStored(name: string): boolean {
  return NEVER_STORED.has(name) || isQuotaHeader(name);
}

/** Headers a 304 carries (RFC 9110 §15.4.5). */
const NOT_MODIFIED_HEADERS = new Set(['cache-control', 'content-location', 'expires', 'vary']);

/** A strong validator from the exact bytes. */
export function strongEtag(body: Buffer): string {
  return `"${hashPart(body)}"`;
}

/** `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2). */
export function etagMatches(ifNoneMatch: string, etag: string): boolean {
  if (ifNoneMatch.trim() === '*') return true;
  const bare = etag.startsWith('W/') ? etag.slice(2) : etag;
  for (const part of ifNoneMatch.split(',')) {
    const tag = part.trim();
    if ((tag.startsWith('W/') ? tag.slice(2) : tag) === bare) return true;
  }
  return false;
}

/**
 * Media types sent as open-ended streams: Server-Sent Events, newline-delimited or sequenced JSON
 * feeds, multipart/x-mixed-replace (camera feeds). Recognised when their headers go out, so the
 * fill lets go at once: otherwise every other client of the URL would wait on a stream that may
 * never end (up to 3 × lockTimeout).
 */
const STREAM_TYPES =
  /^\s*(text\/event-stream|application\/(x-)?ndjson|application\/(jsonl|jsonlines|x-jsonlines)|application\/json-seq|application\/stream\+json|multipart\/x-mixed-replace)\b/i;

/** Why a finished response must not be stored, or undefined when it may be. */
export function refusal(
  res: ServerResponse,
  status: number,
  statuses: ReadonlySet<number>,
): string | undefined {
  if (!statuses.has(status)) return 'status';
  if (res.hasHeader('set-cookie')) return 'set-cookie';
  const cacheControl = res.getHeader('cache-control');
  if (cacheControl !== undefined && /\b(no-store|private|no-cache)\b/i.test(String(cacheControl))) {
    return 'cache-control';
  }
  const type = res.getHeader('content-type');
  if (type !== undefined && STREAM_TYPES.test(String(type))) return 'stream';
  if (parseVary(res.getHeader('vary'))[0] === '*') return 'vary-star';
  // Trailers are not kept with an entry: a hit would announce them and never send them.
  if (res.hasHeader('trailer')) return 'trailers';
  if (type !== undefined && /^\s*(text\/html|application\/xhtml\+xml|image\/svg\+xml)/i.test(String(type))) {
    // A page whose scripts carry a CSP nonce (helmet's `res.locals.cspNonce`): served again, it would
    // meet the new nonce of that request's header (every script blocked), or reuse one for everyone.
    for (const name of ['content-security-policy', 'content-security-policy-report-only']) {
      const policy = res.getHeader(name);
      if (policy !== undefined && /'nonce-/i.test(String(policy))) return 'csp-nonce';
    }
  }
  return undefined;
}

/**
 * The headers of a response worth storing: what the route set, minus the never-stored ones. Headers
 * that middleware in front of the cache had already set (and left alone) are skipped: that
 * middleware runs again on every hit and sets them for that request (CORS, request ids…). `Vary` is
 * the exception: whoever set it, the stored body depends on it, and the entry's own Vary is what
 * splits the key (in Redis and in L1).
 */
export function storedHeaders(
  now: OutgoingHttpHeaders,
  before: OutgoingHttpHeaders,
): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const name of Object.keys(now)) {
    if (neverStored(name)) continue;
    const value = now[name];
    if (value === undefined) continue;
    if (name !== 'vary' && before[name] !== undefined && String(before[name]) === String(value)) continue;
    if (Array.isArray(value)) for (const v of value) out.push([name, v]);
    else out.push([name, String(value)]);
  }
  return out;
}

/**
 * Headers that middleware in front of the cache set and the route removed (a front `Cache-Control`,
 * `X-Powered-By`): that middleware sets them again on every hit, so hits remove them as the route did.
 */
export function removedHeaders(now: OutgoingHttpHeaders, before: OutgoingHttpHeaders): string[] {
  return Object.keys(before).filter(
    (name) => before[name] !== undefined && now[name] === undefined && !neverStored(name),
  );
}

/** The headers of the hit path, prepared once per entry. */
export interface PreparedHeaders {
  /**
   * Flat `[name, value, …]` lists for `writeHead`, a name's repeats as one array: Node 20's
   * `writeHead` sets each pair in turn once a header is set (`X-Cache` always is), so a second
   * `Link` would replace the first.
   */
  full: Array<string | string[]>;
  notModified: Array<string | string[]>;
  /** Headers that middleware in front set and the route removed: removed on hits too. */
  removed: readonly string[];
}

export function prepareHeaders(entry: Entry): PreparedHeaders {
  const grouped = new Map<string, string | string[]>();
  for (const [name, value] of entry.headers) {
    const seen = grouped.get(name);
    if (seen === undefined) grouped.set(name, value);
    else if (Array.isArray(seen)) seen.push(value);
    else grouped.set(name, [seen, value]);
  }
  const full: Array<string | string[]> = [];
  const notModified: Array<string | string[]> = [];
  for (const [name, value] of grouped) {
    full.push(name, value);
    if (NOT_MODIFIED_HEADERS.has(name)) notModified.push(name, value);
  }
  if (entry.etag) {
    full.push('etag', entry.etag);
    notModified.push('etag', entry.etag);
  }
  if (entry.status !== 204 && entry.status !== 304) full.push('content-length', String(entry.body.length));
  return { full, notModified, removed: entry.removed ?? [] };
}

/** `Cache-Control: no-store` on the request. */
export function forbidsStore(req: Request): boolean {
  return requestDirective(req, 'no-store');
}

/** `Cache-Control: only-if-cached` on the request. */
export function onlyIfCached(req: Request): boolean {
  return requestDirective(req, 'only-if-cached');
}

function requestDirective(req: Request, name: string): boolean {
  const directives = req.headers['cache-control'];
  if (directives === undefined) return false;
  return directives
    .toLowerCase()
    .split(',')
    .some((d) => d.trim() === name);
}
