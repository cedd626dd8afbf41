/**
 * Hides the password of a Redis URL, for logs and errors. A URL with an authority (`scheme://…`) that
 * parses is masked through the parser (an `@` in its path or query is not user info); anything else
 * (a forgotten scheme, an unencoded `/` or `#` in the password) by its text: the user info up to the
 * last `@` before any query, but the user name. Any `password=` query value is masked too.
 */
export function maskUrl(url: string): string {
  return maskQuery(/^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? (parsedMask(url) ?? textMask(url)) : textMask(url));
}

function parsedMask(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '****';
    return parsed.toString();
  } catch {
    return undefined;
  }
}

function textMask(url: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/*/i.exec(url)?.[0] ?? '';
  const rest = url.slice(scheme.length);
  const query = rest.indexOf('?');
  const at = rest.lastIndexOf('@', query < 0 ? rest.length : query);
  if (at < 0) return url;
  const info = rest.slice(0, at);
  const colon = info.indexOf(':');
  // Malformed: without a colon, the user info may as well be a password.
  return `${scheme}${colon >= 0 ? `${info.slice(0, colon)}:` : ''}****${rest.slice(at)}`;
}

function maskQuery(url: string): string {
  return url.replace(/([?&;]password=)[^&#]*/gi, '$1****');
}
