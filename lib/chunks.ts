/**
 * Whether Node's `res.end(chunk)` accepts this first argument: it skips falsy ones and callbacks, and
 * takes strings and bytes. Wrappers that defer the real `end()` check this first, because Node's
 * TypeError thrown later, inside a promise callback, would leave the request unanswered.
 */
export function isEndChunk(chunk: unknown): boolean {
  return !chunk || typeof chunk === 'function' || typeof chunk === 'string' || chunk instanceof Uint8Array;
}

/** The TypeError Node's `res.end(chunk)` would throw for this chunk (`ERR_INVALID_ARG_TYPE`), if any. */
export function refusedChunkError(chunk: unknown): TypeError | undefined {
  if (isEndChunk(chunk)) return undefined;
  const received =
    typeof chunk === 'object'
      ? `an instance of ${(chunk as object).constructor?.name ?? 'Object'}`
      : `type ${typeof chunk} (${String(chunk)})`;
  const error = new TypeError(
    `The "chunk" argument must be of type string or an instance of Buffer or Uint8Array. Received ${received}`,
  );
  return Object.assign(error, { code: 'ERR_INVALID_ARG_TYPE' });
}
