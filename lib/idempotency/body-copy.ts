import type { OutgoingHttpHeader, ServerResponse } from 'node:http';
import { chunkBytes, lengthMismatch } from '../chunks';

/**
 * Why a copied body could not be kept: it grew past the limit, a chunk could not be read, or it is
 * not the length the answer declared (its client got a broken answer: see chunks.ts lengthMismatch).
 */
export type Unstorable = 'too-large' | 'unreadable' | 'incomplete';

/** A copy of the body chunks a handler writes, up to `maxBodySize` bytes. */
export class BodyCopy {
  private chunks: Buffer[] | undefined = [];
  private size = 0;
  private why: Unstorable | undefined;

  constructor(private readonly maxBodySize: number) {}

  /** Copies one chunk of `write(chunk, encoding)` / `end(chunk, encoding)`. */
  keep(chunk: unknown, encoding: unknown): void {
    if (!this.chunks || !chunk || typeof chunk === 'function') return;
    let bytes: Buffer;
    try {
      if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) throw new TypeError('not bytes');
      bytes = chunkBytes(chunk, encoding);
    } catch {
      // Not bytes, or an unknown encoding: Node refuses the write too, and whatever gets sent is not
      // known here.
      this.lose('unreadable');
      return;
    }
    this.size += bytes.length;
    // Over the limit: stop copying at once instead of buffering a large download in memory.
    if (this.size > this.maxBodySize) this.lose('too-large');
    else this.chunks.push(bytes);
  }

  /**
   * The body, or why there is none; the copy keeps nothing afterwards. `declared`: the answer's
   * Content-Length, which the body must match.
   */
  take(declared: { length: OutgoingHttpHeader | undefined; status: number; res: ServerResponse }): {
    body: Buffer | undefined;
    unstorable?: Unstorable;
  } {
    if (this.chunks) {
      const size = this.chunks.reduce((sum, chunk) => sum + chunk.length, 0);
      if (lengthMismatch(declared.length, size, declared.status, declared.res)) this.lose('incomplete');
    }
    const body = this.chunks ? Buffer.concat(this.chunks) : undefined;
    this.chunks = undefined;
    return { body, ...(this.why ? { unstorable: this.why } : {}) };
  }

  /** Gives up the copy: the body sent is not the one it could keep. */
  lose(why: Unstorable): void {
    this.chunks = undefined;
    this.why ??= why;
  }
}
