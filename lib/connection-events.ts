import type { RedisClient } from './client';
import { withoutCommandArgs } from './redact';

// What a createRedis client does with its own connection events: the lines it logs, and closing
// itself when Redis refuses its database. buildClient registers closeOnRefusedDatabase first.

/**
 * ioredis reports a failed `SELECT` as an `error` event and then goes ready on database 0: every
 * write, the app's and the kit's, would land in another app's keys. A refusal that will not pass (a
 * database number past the server's `databases`, an ACL without `SELECT`, a server without the
 * command) closes the client for good, so each middleware applies its fail mode, and the line says
 * what to fix. A passing one (`BUSY` while another client's script runs) makes it connect again with
 * its backoff, which needs ioredis's ready check: without it, the client would be ready before the
 * reconnect and reset the backoff, reconnecting many times a second, so it is closed too, saying so.
 * A refused login (`NOAUTH` also comes back on the `SELECT` on RESP2) is ioredis's to report: no
 * command runs, so nothing lands anywhere.
 */
export function closeOnRefusedDatabase(
  client: RedisClient,
  target: string,
  logger: { warn(message: string): void } | undefined,
): void {
  // ioredis sends SELECT only for a database other than 0 (a Cluster has none).
  const options = (client as { options?: { db?: unknown; enableReadyCheck?: unknown } }).options;
  if (!(options?.db as number)) return;
  client.on('error', (error: Error) => {
    if (refusedDatabase.has(client)) return;
    if (!isSelectError(error)) {
      // With logger: false this may be the only listener; ioredis would print the error then.
      if (!logger && client.listenerCount('error') === 1)
        console.error('[ioredis] Unhandled error event:', error.stack);
      return;
    }
    if (REFUSED_LOGIN.test(error.message)) return;
    const passing = PASSING.test(error.message);
    if (passing && options?.enableReadyCheck !== false) {
      client.disconnect(true);
      return;
    }
    const refusal: Refusal = passing
      ? {
          why: `its SELECT failed (${error.message}), and with enableReadyCheck off ioredis would go on in database 0 before connecting again`,
          fix: 'Leave enableReadyCheck on (the default): the client then connects again, with its backoff, instead.',
        }
      : {
          why: `it refused the database the client asked for (${error.message})`,
          fix: /^NOPERM\b/.test(error.message)
            ? 'Grant the ACL user the SELECT command (+select), or use database 0.'
            : "Fix the database number in the URL or `db` (0 to the server's `databases` setting minus one, 0–15 by default).",
        };
    refusedDatabase.set(client, refusal);
    logger?.warn(
      `express-redis-kit: Redis at ${target}: ${refusal.why}. The client is closed, so nothing is written to database 0 instead. ${refusal.fix}`,
    );
    client.disconnect();
  });
}

interface Refusal {
  why: string;
  fix: string;
}

/** Why {@link closeOnRefusedDatabase} closed a client, for connectRedis's rejection. */
const refusedDatabase = new WeakMap<RedisClient, Refusal>();

/** Replies to SELECT that pass by themselves. */
const PASSING = /^(BUSY|LOADING|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|ERR max number of clients)\b/;
const REFUSED_LOGIN = /^(NOAUTH|WRONGPASS)\b/;

function isSelectError(error: unknown): boolean {
  const name = (error as { command?: { name?: unknown } } | null)?.command?.name;
  return typeof name === 'string' && name.toLowerCase() === 'select';
}

/** Why {@link closeOnRefusedDatabase} closed `client`, if it did: for connectRedis's rejection. */
export function refusalOf(client: RedisClient): Refusal | undefined {
  return refusedDatabase.get(client);
}

/**
 * One line when the connection fails (then nothing until it is back), one when it is back. Without
 * any `error` listener, ioredis prints a stack trace for every failed reconnect attempt.
 */
export function reportOutages(
  client: RedisClient,
  target: string,
  logger: { warn(message: string): void },
  quiet: boolean,
): void {
  let down = false;
  let readyOnce = false;
  client.on('error', (error: Error) => {
    // A client closed for its database has said why (closeOnRefusedDatabase listens first).
    if (down || (quiet && !readyOnce) || refusedDatabase.has(client)) return;
    down = true;
    withoutCommandArgs(error);
    logger.warn(
      `express-redis-kit: Redis at ${target} is unreachable (${error.message}); reconnecting in the background. Logged once until it is back.`,
    );
  });
  client.on('ready', () => {
    readyOnce = true;
    // Closed for its database, it may still flash 'ready' (ioredis ends the handshake it was in).
    if (!down || refusedDatabase.has(client)) return;
    down = false;
    logger.warn(`express-redis-kit: Redis at ${target} is reachable again.`);
  });
}
