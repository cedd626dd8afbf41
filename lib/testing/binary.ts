import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Thrown when no redis-server binary can be found. */
export class RedisServerNotFoundError extends Error {
  readonly code = 'ERK_REDIS_SERVER_NOT_FOUND';
  /** `tried`: what was looked at; `pathHint`: how to give the path instead. */
  constructor(tried: string, pathHint = 'set REDIS_SERVER_BIN to its path') {
    super(
      `express-redis-kit: no redis-server binary found (${tried}). Install one: ` +
        '"apt-get update && apt-get install -y redis-server" (Debian/Ubuntu) or "brew install redis" (macOS), ' +
        `or ${pathHint}.`,
    );
    this.name = 'RedisServerNotFoundError';
  }
}

/**
 * Finds redis-server: `explicit` (the `binary` option), else `REDIS_SERVER_BIN`, else the PATH, else
 * `/usr/bin`, `/usr/local/bin` or `/opt/homebrew/bin`.
 * Throws {@link RedisServerNotFoundError}, naming where a bad path came from.
 */
export function findRedisServer(explicit?: string): string {
  if (explicit) {
    if (isExecutable(explicit)) return explicit;
    throw new RedisServerNotFoundError(
      `option "binary" (${explicit}) is not an executable file`,
      'pass its path as "binary"',
    );
  }
  const configured = process.env.REDIS_SERVER_BIN;
  if (configured) {
    if (isExecutable(configured)) return configured;
    throw new RedisServerNotFoundError(`REDIS_SERVER_BIN=${configured} is not an executable file`);
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, 'redis-server');
    if (isExecutable(candidate)) return candidate;
  }
  for (const candidate of [
    '/usr/bin/redis-server',
    '/usr/local/bin/redis-server',
    '/opt/homebrew/bin/redis-server',
  ]) {
    if (isExecutable(candidate)) return candidate;
  }
  return (() => {
    throw new RedisServerNotFoundError('not on PATH, nor in /usr/bin, /usr/local/bin or /opt/homebrew/bin');
  })();
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    // A directory passes the X_OK check too.
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
