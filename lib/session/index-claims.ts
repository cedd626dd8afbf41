import { RedisTimeoutError } from '../errors';
import { emitKitEvent } from '../events';
import { runScript } from '../scripts';
import { newToken } from '../token';
import { FORGET_CLAIM, sessionHandle, userIndexKey } from './scripts';
import type { StoreSettings } from './store';
import { addToUserIndex, evictSessions } from './user-index';

/**
 * The user index's side of the session store. A session script claims the index refresh (`ix`) when
 * the user's index entry would run out before the session; the store then writes the entry (another
 * key, another Cluster slot) and applies `maxSessionsPerUser`. A claim that is not followed by its
 * write must be dropped, and the session must not outlive the entry meanwhile: `list()` and
 * `logoutAll()` would miss it.
 */
export class IndexClaims {
  constructor(
    private readonly settings: StoreSettings,
    /** The store's timeout and breaker, by the key an operation touches. */
    private readonly guard: <T>(key: string, operation: () => Promise<T>) => Promise<T>,
    /** Called with the handles of sessions the cap is about to end. */
    private readonly onEnding: (handles: readonly string[]) => void,
    /** Called with those whose end Redis refused or never received. */
    private readonly onEndFailed: (handles: readonly string[]) => void,
  ) {}

  /**
   * Runs a script that may claim the user-index refresh (`ix`). One that times out can still land,
   * claiming a refresh nobody then makes, and the session could outlive its index entry (missed by
   * `list()`/`logoutAll()`). Dropping `ix` right behind it (same connection, so it runs after) makes
   * the next request refresh the index. Not through `guarded()`: the timeout may just have opened
   * the breaker, and nobody waits for this call.
   */
  claiming<T>(key: string, operation: (claimToken: string) => Promise<T>): Promise<T> {
    // Tells FORGET_CLAIM whether the call it follows made the claim (its reply, which says, is lost).
    const token = newToken();
    return this.guard(key, () => operation(token)).catch((error: unknown) => {
      if (error instanceof RedisTimeoutError) this.forget(key, 0, token);
      throw error;
    });
  }

  /** `vouchedUntil`: see FORGET_CLAIM; 0 when unknown (the claiming call's reply never came). */
  private forget(key: string, vouchedUntil = 0, claimToken = ''): void {
    runScript(this.settings.redis, FORGET_CLAIM, [key], [vouchedUntil, claimToken]).catch(() => {});
  }

  /** `vouchedUntil`: the index entry's end before this claim, to fall back to when it fails. */
  async index(key: string, userId: string, sid: string, ttl: number, vouchedUntil = 0): Promise<void> {
    const size = await this.list(key, userId, sid, ttl, vouchedUntil);
    await this.cap(userId, sid, size);
  }

  /** Lists the session under its user; resolves how many entries the user's index holds. */
  async list(key: string, userId: string, sid: string, ttl: number, vouchedUntil = 0): Promise<number> {
    const { redis, prefix } = this.settings;
    try {
      return await this.guard(userIndexKey(prefix, userId), () =>
        addToUserIndex(redis, prefix, userId, sessionHandle(sid), 2 * ttl),
      );
    } catch (error) {
      // The session already believes it is indexed; un-believe it so the next request retries, even
      // when only the user index's node is down or full (Cluster) and this write can still land.
      this.forget(key, vouchedUntil);
      throw error;
    }
  }

  /**
   * Applies `maxSessionsPerUser` for this session, once it is written (see `evictSessions`). `size`:
   * how many entries its user's index holds, when just counted; a login counts again after its
   * write instead, since of two racing logins the one that listed first may write last, and only it
   * then finds the other written. `since`: when it logged in, for a login (its write's reply).
   */
  async cap(userId: string, sid: string, size?: number, since?: number): Promise<void> {
    const { redis, prefix, maxSessionsPerUser } = this.settings;
    if (maxSessionsPerUser === Number.POSITIVE_INFINITY) return;
    // The cap is housekeeping: a failure here must not fail the request; the next login retries.
    try {
      const key = userIndexKey(prefix, userId);
      const count = size ?? Number(await this.guard(key, () => redis.zcard(key)));
      if (count <= maxSessionsPerUser) return;
      const ended = await evictSessions(
        { ...this.settings, onEnding: this.onEnding, onEndFailed: this.onEndFailed },
        userId,
        sessionHandle(sid),
        maxSessionsPerUser,
        since,
      );
      emitKitEvent({ component: 'session', type: 'evicted', sessions: ended });
    } catch (error) {
      emitKitEvent({ component: 'session', type: 'error', error: error as Error });
    }
  }
}
