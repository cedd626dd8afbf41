import type { IncomingHttpHeaders } from 'node:http';
import type { Entry } from './entry';
import { headerValue, parseVary } from './key';
import type { Rec } from './l1';

/** The request headers a stored response varies on (from its own `Vary`). */
export function varyOf(entry: Entry): string[] {
  const vary: string[] = [];
  for (const [name, value] of entry.headers) if (name === 'vary') vary.push(value);
  return vary.length > 0 ? parseVary(vary) : [];
}

export function variantKey(key: string, names: readonly string[], headers: IncomingHttpHeaders): string {
  let out = `${key}\n\0`;
  for (const name of names) out += `${headerValue(headers, name)}\n`;
  return out;
}

/** A coalesced request may reuse the leader's response only if it is the same variant. */
export function sameVariant(rec: Rec, leader: IncomingHttpHeaders, follower: IncomingHttpHeaders): boolean {
  for (const name of varyOf(rec.entry))
    if (headerValue(leader, name) !== headerValue(follower, name)) return false;
  return true;
}
