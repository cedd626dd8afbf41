import { defineScript, LUA_NOW_MS, runScript } from '../../lib/scripts';
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
