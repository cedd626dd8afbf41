import type { ServerResponse } from 'node:http';
import type { Request } from 'express';
import type { Originals } from './capture';
import { etagMatches, prepareHeaders } from './http';
import type { Rec } from './l1';

export type XCache = 'HIT' | 'MISS' | 'STALE' | 'BYPASS';

/**
 * Answers a request from a cached entry: 304 when its ETag matches `If-None-Match`, else the stored
 * status, headers and body (none for HEAD). `via` is the response's own writeHead/end, or the
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
  res.setHeader('Age', String(Math.max(0, Math.floor((now - rec.bornAt) / 1000))));
  const inm = req.headers['if-none-match'];
  const writeHead = via.writeHead as (status: number, headers: string[]) => unknown;
  const end = via.end as (body?: Buffer) => unknown;
  if (
    inm !== undefined &&
    rec.entry.etag !== undefined &&
    rec.entry.status === 200 &&
    etagMatches(inm, rec.entry.etag)
  ) {
    writeHead.call(res, 304, rec.prepared.notModified);
    end.call(res);
    return;
  }
  writeHead.call(res, rec.entry.status, rec.prepared.full);
  end.call(res, req.method === 'HEAD' ? undefined : rec.entry.body);
}
