import { constants } from 'node:buffer';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import type { Response } from 'express';
import type { StoredResponse } from './record';

// Sending a stored answer again (capture.ts takes it): as stored, or decoded for a retry that does
// not accept the coding a compression middleware mounted after idempotency() gave it.

const DECODERS: Record<string, (body: Buffer, options: { maxOutputLength: number }) => Buffer> = {
  gzip: gunzipSync,
  'x-gzip': gunzipSync,
  deflate: inflateSync,
  br: brotliDecompressSync,
};

/**
 * How much larger than `maxBodySize` a stored encoded body may grow when decoded for a retry: room
 * for what compresses well (JSON, text), while a small stored body that inflates to hundreds of MB
 * cannot make each cheap retry block the event loop and take that much memory.
 */
export const DECODED_BODY_FACTOR = 16;

/**
 * The stored body and headers as this client can read them. A compression middleware mounted
 * _after_ `idempotency()` compresses before the copy is taken; a retry that does not accept that
 * coding gets the body decoded instead of bytes it cannot read, up to `maxDecoded` bytes
 * ('too-large' past that).
 */
function readableBy(
  res: Response,
  stored: StoredResponse,
  maxDecoded: number,
): Pick<StoredResponse, 'headers' | 'body'> | { tooLarge: string } {
  const coding = stored.headers.find(([name]) => name === 'content-encoding')?.[1];
  const name = typeof coding === 'string' ? coding.trim().toLowerCase() : '';
  const decode = DECODERS[name];
  if (!decode || !res.req || res.req.acceptsEncodings(name)) return stored;
  try {
    return {
      headers: stored.headers.filter(
        ([header]) => header !== 'content-encoding' && header !== 'content-length',
      ),
      // zlib refuses a limit past the largest Buffer (a huge maxBodySize × 16).
      body: decode(stored.body, { maxOutputLength: Math.min(Math.max(maxDecoded, 1), constants.MAX_LENGTH) }),
    };
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') return { tooLarge: name };
    return stored;
  }
}

/**
 * Sends a stored response again, byte for byte, marked `Idempotent-Replayed: true`. → the content
 * coding the client must accept instead, when the stored body is in one it does not accept and too
 * large to decode (nothing sent then).
 */
export function replay(res: Response, stored: StoredResponse, maxDecoded: number): string | undefined {
  const readable = readableBy(res, stored, maxDecoded);
  if ('tooLarge' in readable) return readable.tooLarge;
  const { headers, body } = readable;
  res.status(stored.status);
  if (stored.message) res.statusMessage = stored.message;
  for (const [name, value] of headers) {
    if (Array.isArray(value) && value.length === 0) res.removeHeader(name);
    else res.setHeader(name, value);
  }
  res.setHeader('Idempotent-Replayed', 'true');
  res.end(body);
  return undefined;
}
