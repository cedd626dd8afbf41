import type { Request, Response } from 'express';
import { type GuardOptions, guarded } from '../guarded';
import { emitWarningOnce } from '../logger';
import { mark } from '../marks';
import { beginWork } from '../pending-work';
import { type CapturedResponse, captureResponse } from './capture';
import { watchTimeoutGuard } from './late-answer';
import type { ResolvedIdempotencyOptions } from './options';
import * as record from './record';

/** What `protect()` needs of its middleware. */
export interface LeaseContext {
  o: ResolvedIdempotencyOptions;
  emit(type: string, detail?: Record<string, unknown>): void;
  guard: Omit<GuardOptions, 'key'>;
}

/**
 * Marks a response as a 409 "in progress" of the kit's own, for another record (a second idempotency
 * middleware with other options on the same route): a passing state, never an answer to store.
 */
const IN_PROGRESS = mark<true>('idempotency.in-progress');
export const markInProgress = (res: Response): void => IN_PROGRESS.set(res, true);
const inProgress = (res: Response) => IN_PROGRESS.get(res) === true;

/** Keeps the lease alive while the handler runs, then stores or releases the outcome. */
export function protect(
  { o, emit, guard }: LeaseContext,
  req: Request,
  res: Response,
  key: string,
  /** Who holds the lease, for which request, and the forgotten mark its reservation saw (record.ts). */
  { owner, fingerprint, forgotten }: { owner: string; fingerprint: string; forgotten: string },
): void {
  watchTimeoutGuard(req, res);
  // Until its answer is stored or the key released, or the lease given up: closeRedis waits for it.
  const endWork = beginWork(o.redis);
  // Monotonic: a wall clock step would stretch or cut the lease (a cut one lets a retry run the
  // handler while this one still does).
  const started = performance.now();
  let beating = false;
  let stopped = false;
  // Set when the connection closed mid-answer; from then on only a handler that keeps writing is
  // presumed alive (one that threw after writing never will).
  let brokenOff = false;
  // An answer that may never end, started after the client left (see capture.ts): no event
  // unless it lapses.
  let silentlyBrokenOff = false;
  let lastWrite = started;
  // Another request (or forget()) took the key: this one's answer must not be stored over it.
  let lost = false;
  // A timeout guard answered in the handler's place; the handler's own answer is awaited.
  let awaiting = false;
  const timer = setInterval(() => {
    // Cap: a handler that never ends its response must not hold the key forever.
    if (performance.now() - started > o.ttlMs) return stop();
    // Broken off, or answered by a timeout guard: the lease ends lockTtl after the last sign of
    // life, not a full lockTtl after the last renewal before it.
    const leaseMs = brokenOff ? Math.ceil(lastWrite + o.lockTtlMs - performance.now()) : o.lockTtlMs;
    if (leaseMs <= 0) {
      // Started after the client left, then silent: reported now that it is given up.
      if (silentlyBrokenOff) emit('abandoned', { status: res.statusCode, reason: 'aborted' });
      return stop();
    }
    if (beating) return;
    beating = true;
    guarded(o.redis, () => record.heartbeat(o.redis, key, owner, fingerprint, leaseMs, forgotten), {
      ...guard,
      key,
    })
      .then((lease) => {
        if (lease === 'taken-back') emit('lease-restored');
        if (lease === 'lost' && !stopped) {
          lost = true;
          emit('lease-lost');
          stop();
        }
      })
      .catch((error: unknown) => emit('heartbeat-failed', { error }))
      .finally(() => {
        beating = false;
      });
  }, o.heartbeatMs);
  timer.unref?.();
  const stop = () => {
    stopped = true;
    clearInterval(timer);
    // Given up (past ttl, lapsed, lost) with no answer to store or release.
    if (!settled) endWork();
  };

  // Exactly one outcome per reservation: the handler's end() or the connection closing mid-response.
  let settled = false;
  const release = (status: number, reason: string) =>
    releaseKey({ o, emit, guard }, key, owner, status, reason);

  // A `storeStatuses` function that throws is the app's bug, but it must not leave the key in flight
  // (the capture would send the answer and neither store nor release it): the answer is not stored,
  // the key is released, and the error is reported.
  let storeStatusesError: { error: unknown } | undefined;
  const shouldStore = (status: number): boolean => {
    try {
      return Boolean(o.shouldStore(status));
    } catch (error) {
      storeStatusesError ??= { error };
      return false;
    }
  };
  const storable = (captured: CapturedResponse): captured is CapturedResponse & { body: Buffer } =>
    captured.body !== undefined && !inProgress(res) && shouldStore(captured.status);

  /**
   * A timeout guard (connect-timeout sets `req.timedout`) answered while the handler works on.
   * Releasing the key would let a retry run the handler alongside it: it stays in flight instead,
   * and the handler's own answer is stored when it comes (it never reaches this client). A handler
   * that stopped when the guard fired never answers: its lease then lapses lockTtl after the
   * guard's answer, as for a broken-off response.
   */
  const guardAnswered = (captured: CapturedResponse) =>
    !storable(captured) && !awaiting && !lost && (req as { timedout?: unknown }).timedout === true;

  /** Stores the answer, or releases the key when it is not one to store. */
  const settle = async (captured: CapturedResponse): Promise<void> => {
    if (!storable(captured)) {
      if (storeStatusesError) {
        emit('store-statuses-failed', { status: captured.status, error: storeStatusesError.error });
        const { error } = storeStatusesError;
        emitWarningOnce(
          'ERK_IDEMPOTENCY_STORE_STATUSES_THREW',
          () =>
            `express-redis-kit idempotency: the storeStatuses function threw (${(error as Error)?.message ?? String(error)}); ` +
            'the answer was sent but not stored, and the key released, so a retry runs the handler again. (Warned once; ' +
            'every time as the event "store-statuses-failed".)',
        );
        return release(captured.status, 'store-statuses-threw');
      }
      const why =
        captured.body === undefined
          ? (captured.unstorable ?? 'too-large')
          : inProgress(res)
            ? 'in-progress'
            : 'status';
      return release(captured.status, why);
    }
    const { status, body } = captured;
    // The client broke off its upload: whatever answers now (a body parser's 400 "request
    // aborted", a partial upload refused) follows from that, and its retry must run afresh.
    if (!req.complete && (req.destroyed || (req as { aborted?: boolean }).aborted)) {
      return release(status, 'request-aborted');
    }
    if (lost) return emit('lease-lost', { status });
    try {
      const lease = await guarded(
        o.redis,
        () =>
          record.complete(
            o.redis,
            key,
            owner,
            fingerprint,
            { status, message: captured.message, headers: captured.headers, body },
            o.ttlMs,
            forgotten,
            // Near ttl it may no longer take back a vanished record: a forget() mark lasts ttl from the
            // forget, which may have come a round trip after the reservation this clock did not see.
            performance.now() - started <= o.ttlMs - o.lockTtlMs,
          ),
        { ...guard, key },
      );
      if (lease === 'taken-back') emit('lease-restored', { status });
      emit(lease === 'lost' ? 'lease-lost' : 'stored', { status });
    } catch (error) {
      emit('store-failed', { status, error });
    }
  };

  captureResponse(res, o.maxBodySize, {
    aborted: () => {
      if (settled) return;
      // The response broke off, but the handler may still be at work (a stream whose client left):
      // releasing now could run it twice at once. The lease is renewed while it keeps writing, and
      // its answer is stored if it ends; once it has been silent for lockTtl (it threw, or stopped
      // without end()), the lease lapses and a retry runs the handler again.
      brokenOff = true;
      lastWrite = performance.now();
      emit('abandoned', { status: res.statusCode, reason: 'aborted' });
    },
    wrote: () => {
      lastWrite = performance.now();
    },
    mayNeverEnd: () => {
      if (settled || brokenOff) return;
      brokenOff = true;
      silentlyBrokenOff = true;
      lastWrite = performance.now();
    },
    beforeEnd: async (captured: CapturedResponse) => {
      if (settled) return undefined;
      if (guardAnswered(captured)) {
        awaiting = true;
        brokenOff = true;
        lastWrite = performance.now();
        emit('awaiting-handler', { status: captured.status });
        return 'await-handler';
      }
      settled = true;
      stop();
      try {
        await settle(captured);
      } finally {
        endWork();
      }
      return undefined;
    },
  });
}

/** Frees a reservation this request holds, so a retry runs the handler; never rejects. */
export async function releaseKey(
  { o, emit, guard }: LeaseContext,
  key: string,
  owner: string,
  status: number,
  reason: string,
): Promise<void> {
  try {
    await guarded(o.redis, () => record.release(o.redis, key, owner), { ...guard, key });
    emit('released', { status, reason });
  } catch (error) {
    emit('release-failed', { status, reason, error });
  }
}
