import type { IncomingHttpHeaders } from 'node:http';
import type { Entry } from './entry';
import { headerValue, parseVary } from './key';
import { isRec, type L1, type Rec } from './l1';

/** The request headers a stored response varies on (from its own `Vary`). */
export function varyOf(entry: Entry): string[] {
  const vary: string[] = [];
  for (const [name, value] of entry.headers) if (name === 'vary') vary.push(value);
  return vary.length > 0 ? parseVary(vary) : [];
}

/**
 * An L1 variant's key: the names are part of it, as a new set of names starts a new generation of
 * variants in Redis. Without them, a response varying on other headers would find the old variant
 * whose values match (an `X-Region: en` the answer for `Accept-Language: en`).
 */
export function variantKey(key: string, names: readonly string[], headers: IncomingHttpHeaders): string {
  let out = `${key}\n\0${names.join(',')}\n\0`;
  for (const name of names) out += `${headerValue(headers, name)}\n`;
  return out;
}

/** A coalesced request may reuse the leader's response only if it is the same variant. */
export function sameVariant(rec: Rec, leader: IncomingHttpHeaders, follower: IncomingHttpHeaders): boolean {
  for (const name of varyOf(rec.entry))
    if (headerValue(leader, name) !== headerValue(follower, name)) return false;
  return true;
}

/**
 * The L1 entry for a request: a key whose responses vary holds a marker naming the headers, and each
 * variant lives under its own key (mirroring the Redis layout).
 */
export function l1Lookup(
  l1: L1,
  key: string,
  headers: IncomingHttpHeaders,
  now: number,
  evenIfDeaf = false,
): Rec | undefined {
  const value = l1.get(key, now, evenIfDeaf);
  if (value === undefined || isRec(value)) return value;
  const variant = l1.get(variantKey(key, value.vary, headers), now, evenIfDeaf);
  return variant && isRec(variant) ? variant : undefined;
}

/** Puts a response into L1, behind a Vary marker when it varies; `heard` as read before the lookup (CacheCore.heard). */
export function l1Put(l1: L1, key: string, rec: Rec, headers: IncomingHttpHeaders, heard: number): void {
  const names = varyOf(rec.entry);
  const now = Date.now();
  if (names.length === 0) {
    l1.set(key, rec, now, heard);
    return;
  }
  const marker = l1.get(key, now);
  const expiresAt = marker && !isRec(marker) ? Math.max(marker.expiresAt, rec.expiresAt) : rec.expiresAt;
  l1.set(key, { vary: names, redisKey: rec.redisKey, expiresAt }, now, heard);
  l1.set(variantKey(key, names, headers), rec, now, heard);
}
