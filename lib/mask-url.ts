/**
 * Hides the password of a Redis URL, for logs and errors. A URL that parses with its user info is
 * masked through the parser (an `@` in its query is then just data); anything else by its text: the
 * user info up to the last `@`, but the user name. That covers a forgotten scheme, and a password
 * with an unencoded `/`, `?` or `#`, which may even parse, as a host and a path. Query values whose
 * name says password, passphrase, secret or token are masked too.
 */
export function maskUrl(url: string): string {
  const parsed = parseWithScheme(url);
  const masked = parsed && !hidesUserInfo(parsed) ? maskParsed(parsed) : maskText(url);
  // ioredis copies every query parameter into its options: `sentinelPassword`, a `tls` passphrase…
  return masked.replace(/([?&;])([^=&#]*)=([^&#]*)/g, (part, separator: string, name: string) =>
    /password|passphrase|secret|token/i.test(decodedName(name)) ? `${separator}${name}=****` : part,
  );
}

/**
 * Whether a URL that parsed may still hold user info the parser did not see: an `@` in its path,
 * fragment, or a query part that is no `name=value` (`redis://u:12/ss@host` parses as host `u`,
 * port 12; `redis://u:p@ss/word@host` as password `p`, host `ss`). Such a URL does not mean what it
 * says; it is most likely a password to percent-encode. A Redis URL's path is its database number.
 */
export function hidesUserInfo(parsed: URL): boolean {
  if (parsed.pathname.includes('@') || parsed.hash.includes('@')) return true;
  return parsed.search
    .slice(1)
    .split('&')
    .some((part) => part.includes('@') && !part.includes('='));
}

function parseWithScheme(url: string): URL | undefined {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return undefined;
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}

function maskParsed(parsed: URL): string {
  if (parsed.password) parsed.password = '****';
  return parsed.toString();
}

function maskText(url: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/*/i.exec(url)?.[0] ?? '';
  const rest = url.slice(scheme.length);
  const at = rest.lastIndexOf('@');
  if (at < 0) return url;
  const info = rest.slice(0, at);
  const colon = info.indexOf(':');
  // Malformed: without a colon, the user info may as well be a password.
  return `${scheme}${colon >= 0 ? `${info.slice(0, colon)}:` : ''}****${rest.slice(at)}`;
}

/** A query parameter's name as ioredis reads it (percent-decoded: `sentinel%50assword`). */
function decodedName(name: string): string {
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}

/**
 * A request URL for a log line: its path, without the query string, which may carry tokens
 * (`?access_token=…`, signed URLs) that logs must not keep.
 */
export function withoutQuery(url: string): string {
  const end = url.search(/[?#]/);
  return end === -1 ? url : url.slice(0, end);
}
