import { defineScript, LUA_NOW_MS, runScript, runScriptBuffer } from '../../lib/scripts';
import { useRedisServer } from '../helpers/redis';

const counter = defineScript(
  'test_counter',
  1,
  `${LUA_NOW_MS}
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return { n, now_ms }`,
);

describe('script registry', () => {
  const redis = useRedisServer();

  it('runs a registered script by EVALSHA with keys, args and the Redis server clock', async () => {
    const client = redis.client();
    const [n, now] = await runScript<[number, number]>(client, counter, ['s:{a}'], [10_000]);
    expect(n).toBe(1);
    expect(Math.abs(now - Date.now())).toBeLessThan(5000);
    expect(await client.pttl('s:{a}')).toBeGreaterThan(9000);
  });

  it('defines the command on each client once, and reloads the script after SCRIPT FLUSH (NOSCRIPT)', async () => {
    const client = redis.plain();
    const define = jest.spyOn(client, 'defineCommand');
    await runScript(client, counter, ['s:{b}'], [10_000]);
    await runScript(client, counter, ['s:{b}'], [10_000]);
    expect(define).toHaveBeenCalledTimes(1);
    await client.script('FLUSH');
    const [n] = await runScript<[number]>(client, counter, ['s:{b}'], [10_000]);
    expect(n).toBe(3);
  });

  it('refuses two different bodies under one name', () => {
    expect(() => defineScript('test_counter', 1, 'return 1')).toThrow(/registered twice/);
    expect(defineScript('test_counter', 1, counter.lua)).toBe(counter);
  });
});

describe('script registry with auto-pipelining', () => {
  const redis = useRedisServer();

  it('defining a script while an auto-pipeline is queued neither crashes nor misroutes replies (ioredis #1931)', async () => {
    const client = redis.client({ keyPrefix: 'ap:' });
    await client.ping();
    await client.set('k', 'v');
    const crashes: Error[] = [];
    const onCrash = (e: Error) => crashes.push(e);
    process.on('uncaughtException', onCrash);
    try {
      const fresh = defineScript('test_late', 1, "return redis.call('GET', KEYS[1])");
      // Same tick: a GET opens an auto-pipeline, then the script is defined and called twice.
      const get = client.get('k');
      const first = runScript(client, fresh, ['k'], []);
      const second = runScript(client, fresh, ['k'], []);
      const asBuffer = runScriptBuffer(client, defineScript('test_late_buf', 1, fresh.lua), ['k'], []);
      expect(await Promise.all([get, first, second])).toEqual(['v', 'v', 'v']);
      expect(await asBuffer).toEqual(Buffer.from('v'));
      // Later calls take the normal EVALSHA path.
      expect(await runScript(client, fresh, ['k'], [])).toBe('v');
      await new Promise((r) => setImmediate(r));
      expect(crashes).toEqual([]);
    } finally {
      process.off('uncaughtException', onCrash);
    }
  });
});
