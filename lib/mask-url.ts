/** Hides the password of a Redis URL, for logs and errors. */
export function maskUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '****';
    return parsed.toString();
  } catch {
    return url.replace(/\/\/([^@/]*)@/, '//****@');
  }
}
