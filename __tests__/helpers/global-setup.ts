import { findRedisServer } from '../../lib/testing';

/**
 * Fails the run once, up front, when no redis-server can be found: otherwise nearly every test fails
 * with the same message and a stack trace, and the one line that says what to install is lost.
 */
export default function globalSetup(): void {
  try {
    findRedisServer();
  } catch (error) {
    console.error(`\n${(error as Error).message}\n`);
    process.exit(1);
  }
}
