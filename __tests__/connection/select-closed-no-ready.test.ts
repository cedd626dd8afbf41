import Redis from 'ioredis';
import { closeRedis, createRedis } from '../../lib/connection';
import { eventually, useRedisServer } from '../helpers/redis';

const redis = useRedisServer();

describe('enableReadyCheck: false, SELECT refused at a reconnect (ACL change)', () => {
  it('the last line is the close, not "reachable again"', async () => {
    const admin = redis.track(new Redis(redis.server.url));
    await admin.call('ACL', 'SETUSER', 'app', 'on', '>app-pass', '~*', '&*', '+@all');
    const lines: string[] = [];
    const client = createRedis({
      url: `redis://app:app-pass@127.0.0.1:${redis.server.port}/3`,
      enableReadyCheck: false,
      logger: { warn: (m: string) => lines.push(m) },
    });
    const events: string[] = [];
    try {
      await client.set('k', 'v');
      client.on('ready', () => events.push('ready'));
      client.on('end', () => events.push('end'));
      await admin.call('ACL', 'SETUSER', 'app', '-select');
      await admin.call('CLIENT', 'KILL', 'USER', 'app');
      await eventually(() => client.status === 'end', 'the client to close', 5000);
      await new Promise((r) => setTimeout(r, 200));
      expect(lines[lines.length - 1]).toMatch(/Grant the ACL user the SELECT command/);
      expect(lines.join('\n')).not.toMatch(/reachable again/);
      expect(events).toContain('end');
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
      await admin.call('ACL', 'DELUSER', 'app');
    }
  });
});

describe('enableReadyCheck: false, Redis down at start, then up refusing the database', () => {
  const down = useRedisServer();
  it('no "reachable again" after the line that says the client is closed', async () => {
    await down.server.kill();
    const lines: string[] = [];
    const client = createRedis({
      url: `${down.server.url}/99`,
      enableReadyCheck: false,
      logger: { warn: (m: string) => lines.push(m) },
    });
    try {
      await eventually(() => lines.length > 0, 'the outage line', 5000);
      await down.server.restart();
      await eventually(() => client.status === 'end', 'the client to close', 8000);
      await new Promise((r) => setTimeout(r, 200));
      expect(lines[lines.length - 1]).toMatch(/refused the database.*Fix the database number/);
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
    }
  }, 20_000);
});
