import Redis from 'ioredis';
import { closeRedis, createRedis } from '../../lib/connection';
import { useRedisServer } from '../helpers/redis';

// A script past busy-reply-threshold (lua-time-limit, 5 s by default; 1.5 s here to keep the test
// short). Until the threshold Redis reads nothing, so a client that connects early enough sees its
// handshake SELECT time out (the kit's commandTimeout, 500 ms) before the BUSY reply comes: that
// reply then answers a settled command and no 'error' event carries it.
const SPIN =
  "local t=redis.call('TIME') local s=t[1]*1000000+t[2] local e=s+tonumber(ARGV[1])*1000 " +
  "while true do local n=redis.call('TIME') if n[1]*1000000+n[2] >= e then break end end return 1";

const redis = useRedisServer({ args: ['--busy-reply-threshold', '1500'] });

describe('the handshake SELECT times out, then is answered BUSY, then the script ends', () => {
  it.each([
    ['enableReadyCheck: false, protocol 3', false, 3],
    ['enableReadyCheck: true (default), protocol 3', true, 3],
    // Not with protocol 2 and the ready check off: the SELECT's timeout carries no command, so the
    // client goes on in database 0 (ioredis's handshake; see the README's url row).
    ['enableReadyCheck: true (default), protocol 2', true, 2],
  ])(
    '%s: no write of the app lands in database 0',
    async (_t, enableReadyCheck, protocol) => {
      const admin0 = redis.track(new Redis(redis.server.url));
      const admin3 = redis.track(new Redis(`${redis.server.url}/3`));
      await admin0.flushall();
      const runner = redis.track(new Redis(redis.server.url));
      await runner.ping();
      const spinning = runner.eval(SPIN, 0, '2500').catch(() => undefined);
      await new Promise((r) => setTimeout(r, 200));
      const lines: string[] = [];
      const events: string[] = [];
      const client = createRedis({
        url: `${redis.server.url}/3`,
        enableReadyCheck: enableReadyCheck as boolean,
        protocol: protocol as 2 | 3,
        logger: { warn: (m: string) => lines.push(m) },
      });
      client.on('ready', () => events.push('ready'));
      client.on('error', (e: Error & { command?: { name?: string } }) =>
        events.push(`error ${e.command?.name}: ${e.message.slice(0, 30)}`),
      );
      try {
        await spinning;
        // The app goes on writing, as a request handler would.
        for (let i = 0; i < 10; i++) {
          await client.set(`after-script-${i}`, '1').catch(() => undefined);
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(await admin0.keys('*')).toEqual([]);
        if (client.status === 'ready') expect(await admin3.dbsize()).toBeGreaterThan(0);
      } finally {
        await closeRedis(client, { timeoutMs: 200 });
      }
    },
    20_000,
  );
});
