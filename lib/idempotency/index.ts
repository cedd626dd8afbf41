/** Idempotency keys: exactly-once POST/PATCH with stored responses replayed on retry. */
export { canonicalJson } from './canonical-json';
export { defaultFingerprint } from './fingerprint';
export { type IdempotencyMiddleware, type IdempotencyRecordId, idempotency } from './middleware';
export type { IdempotencyOptions, ResolvedIdempotencyOptions, ScopeValue } from './options';

export { defaultStoreStatus } from './options';
