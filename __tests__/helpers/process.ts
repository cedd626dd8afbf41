/**
 * Collects unhandled promise rejections while each test of the file runs (emptied before each), so a
 * test can assert there were none: a stray rejection would take a default Node process down.
 */
export function useUnhandledRejections(): unknown[] {
  const seen: unknown[] = [];
  const listener = (reason: unknown) => seen.push(reason);
  beforeEach(() => {
    seen.length = 0;
    process.on('unhandledRejection', listener);
  });
  afterEach(() => {
    process.off('unhandledRejection', listener);
  });
  return seen;
}
