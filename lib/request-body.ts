import type { IncomingHttpHeaders } from 'node:http';

/** Whether a request carries a body, as HTTP/1.1 says: a non-zero `Content-Length`, or chunked. */
export function hasBody(headers: IncomingHttpHeaders | undefined): boolean {
  const length = headers?.['content-length'];
  return headers?.['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}
