import Redis from 'ioredis';
import { OutageTracker } from '../../lib/outage';

// Which outages get a log line: once per outage, not once per flap of a flapping Redis, and never
// none for an outage that goes on.

describe('OutageTracker', () => {
  // Never connects: the tracker only asks whether the client is a Cluster.
  const redis = new Redis({ lazyConnect: true });
  afterAll(() => redis.disconnect());
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('announces an outage once, and a flap soon after it not at all', () => {
    const outages = new OutageTracker(redis, 10_000);
    expect(outages.begin('k')).toBe('');
    expect(outages.begin('k')).toBeUndefined();
    expect(outages.end('k')).toEqual(['']);
    expect(outages.begin('k')).toBeUndefined();
  });

  it('announces an outage that began in the quiet time once it outlasts it', async () => {
    const outages = new OutageTracker(redis, 200);
    expect(outages.begin('k')).toBe('');
    outages.end('k');
    expect(outages.begin('k')).toBeUndefined(); // a flap
    await sleep(250);
    // Still failing after the quiet time: a real outage, which must not go unannounced.
    expect(outages.begin('k')).toBe('');
    expect(outages.begin('k')).toBeUndefined();
  });
});
