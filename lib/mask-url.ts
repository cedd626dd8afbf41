/**
 * Hides the password of a Redis URL, for logs and errors. Works on the text, not a parsed URL, so a
 * malformed one (a forgotten scheme, an unencoded `/` or `#` in the password) is masked too: all of
 * the user info up to the last `@` but the user name, and any `password=` query value.
 */
export function maskUrl(url: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/*/i.exec(url)?.[0] ?? '';
  let rest = url.slice(scheme.length);
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const info = rest.slice(0, at);
    const colon = info.indexOf(':');
    // Without a colon the whole user info may be a password (`redis://secret@host`).
    rest = `${colon >= 0 ? `${info.slice(0, colon)}:` : ''}****${rest.slice(at)}`;
  }
  return scheme + rest.replace(/([?&;]password=)[^&#]*/gi, '$1****');
}
