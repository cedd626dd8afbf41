// The kit's unfinished work on a client: Redis calls in flight, idempotency leases whose answer is
// still to be stored, cache fills and background refreshes whose lock is still to be released or
// entry stored. closeRedis waits for it (within its budget) before QUIT: a graceful shutdown closes
// Redis once the last connection is gone, which can be before the last handler is (its client left,
// or a timeout guard answered for it), and what it then sends would be lost as in a crash, an
// idempotent handler's answer with it (its retry would run the handler again).

export interface Work {
  count: number;
  /** Called when count drops to 0. */
  idle: Array<() => void>;
}

const works = new WeakMap<object, Work>();

/**
 * The work counter of `redis`, counted up by one: pair with exactly one {@link endOne}. For callers
 * that already know when they are done once (guarded calls); others use {@link beginWork}.
 */
export function startOne(redis: object): Work {
  let work = works.get(redis);
  if (work === undefined) {
    work = { count: 0, idle: [] };
    works.set(redis, work);
  }
  work.count++;
  return work;
}

/** Ends one piece of work {@link startOne} counted; wakes the drains when none is left. */
export function endOne(work: Work): void {
  if (--work.count > 0) return;
  const idle = work.idle;
  work.idle = [];
  for (const wake of idle) wake();
}

/** Counts one piece of work on `redis` until the returned function is called (more calls: no-ops). */
export function beginWork(redis: object): () => void {
  const work = startOne(redis);
  let ended = false;
  return () => {
    if (ended) return;
    ended = true;
    endOne(work);
  };
}

/** One turn of the event loop. */
export const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** How often a drain looks whether it should go on waiting (`usable`). */
const LOOK_MS = 100;

/**
 * Resolves once no work is counted on `redis`, at `deadline` (`performance.now()`), or once
 * `usable()` is false (Redis went away: the work fails at once, or waits for a reconnect that
 * closing rules out). It first lets the current turn of the event loop end, and looks again after
 * each wake-up: Node calls `server.close()`'s callback before the last connection's 'close' event
 * (its close phase), which is when the kit settles what a broken-off request held, and a call often
 * follows another's reply.
 */
export async function drainWork(redis: object, deadline: number, usable: () => boolean): Promise<void> {
  for (;;) {
    // Two turns: past this one's close phase, then past what its callbacks queued for the next.
    await turn();
    await turn();
    const work = works.get(redis);
    const left = deadline - performance.now();
    if (work === undefined || work.count === 0 || left <= 0 || !usable()) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.min(left, LOOK_MS));
      work.idle.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
