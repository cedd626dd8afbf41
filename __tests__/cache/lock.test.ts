import { LockBusyError, withLock } from '../../lib/cache';
import { taggedKey } from '../../lib/keys';
import { eventually, useRedisServer } from '../helpers/redis';
import { sleep } from './helpers';

const redis = useRedisServer();

describe('withLock', () => {
  it('runs critical sections one at a time across clients', async () => {
    const a = redis.client();
    const b = redis.client();
    let inside = 0;
    let maxInside = 0;
    const section = async () => {
      inside++;
      maxInside = Math.max(maxInside, inside);
      await sleep(50);
      inside--;
    };
    await Promise.all(
      Array.from({ length: 6 }, (_, i) => withLock(i % 2 ? a : b, 'job', section, { ttl: 2000 })),
    );
    expect(maxInside).toBe(1);
    expect(await a.exists(taggedKey('erk:', 'lock', 'job'))).toBe(0);
  });

  it('rejects with LockBusyError when the lock stays busy beyond wait', async () => {
    const a = redis.client();
    let release!: () => void;
    const held = withLock(a, 'busy', () => new Promise<void>((r) => (release = r)), { ttl: 2000 });
    await sleep(50);
    await expect(withLock(a, 'busy', () => 'never', { wait: 0 })).rejects.toBeInstanceOf(LockBusyError);
    release();
    await held;
    expect(await withLock(a, 'busy', () => 'now', { wait: 0 })).toBe('now');
  });

  it('extends the lock while fn runs longer than its ttl', async () => {
    const a = redis.client();
    // Several lifetimes long, with room for a busy machine to run the renewals late.
    const held = withLock(a, 'long', () => sleep(1500).then(() => 'done'), { ttl: 300 });
    await sleep(900);
    await expect(withLock(a, 'long', () => 'stolen', { wait: 0 })).rejects.toBeInstanceOf(LockBusyError);
    expect(await held).toBe('done');
  });

  it('only releases its own lock, never one that expired and went to someone else', async () => {
    const a = redis.client();
    const key = taggedKey('erk:', 'lock', 'owned');
    const first = withLock(
      a,
      'owned',
      async (signal) => {
        // Simulate losing the lock (e.g. a long pause): someone else now holds it.
        await a.set(key, 'someone-else', 'PX', 5000);
        // The next renewal finds the lock gone (however late a busy machine runs it).
        await eventually(() => signal.aborted, 'the lost lock noticed');
        return signal.aborted;
      },
      { ttl: 300 },
    );
    expect(await first).toBe(true);
    expect(await a.get(key)).toBe('someone-else');
  });
});
