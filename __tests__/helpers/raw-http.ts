import http from 'node:http';

export interface Raw {
  status: number;
  message: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  trailers: Record<string, string | undefined>;
  info: Array<{ status: number; headers: http.IncomingHttpHeaders }>;
  body: Buffer;
}

/** One request, no decoding, sees 1xx, trailers and the reason phrase. */
export function raw(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const info: Raw['info'] = [];
    const req = http.request(
      url,
      { method: opts.method ?? 'GET', headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            message: res.statusMessage ?? '',
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            trailers: res.trailers as Record<string, string>,
            info,
            body: Buffer.concat(chunks),
          }),
        );
        res.on('error', reject);
        res.on('aborted', () => reject(new Error('aborted')));
      },
    );
    req.on('information', (i) => info.push({ status: i.statusCode, headers: i.headers }));
    req.on('error', reject);
    req.setTimeout(opts.timeoutMs ?? 3000, () => req.destroy(new Error('timeout')));
    req.end(opts.body);
  });
}
