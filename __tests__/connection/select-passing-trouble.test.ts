import Redis from 'ioredis';
import { closeRedis, createRedis } from '../../lib/connection';
import { eventually, useRedisServer } from '../helpers/redis';

// A SELECT that fails for a reason that passes is no refused database: the client must connect
// again (not close for good), and no line or rejection may blame the database number.

/** Runs a script that keeps Redis busy for about 2 s; resolves when it is over. */
function busyFor2s(url: string): Promise<void> {
  const runner = new Redis(url);
  return runner
    .eval(
      "local s=tonumber(redis.call('TIME')[1]) while tonumber(redis.call('TIME')[1]) < s + 2 do end return 1",
      0,
    )
    .then(
      () => undefined,
      () => undefined,
    )
    .finally(() => runner.disconnect());
}

describe('a SELECT answered BUSY (a slow script elsewhere)', () => {
  const redis = useRedisServer({ args: ['--busy-reply-threshold', '100'] });

  it('the client connects again once the script is over, and writes to its database', async () => {
    const admin = redis.track(new Redis(`${redis.server.url}/3`));
    const lines: string[] = [];
    const spinning = busyFor2s(redis.server.url);
    await new Promise((r) => setTimeout(r, 300));
    const client = createRedis({
      url: `${redis.server.url}/3`,
      logger: { warn: (m: string) => lines.push(m) },
    });
    try {
      await spinning;
      await eventually(
        () =>
          client.set('k', 'v').then(
            () => true,
            () => false,
          ),
        'the client to work',
        6000,
      );
      expect(await admin.get('k')).toBe('v');
      expect(lines.join('\n')).not.toMatch(/refused the database/);
      expect(client.status).toBe('ready');
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
    }
  }, 20_000);

  it('failFast meanwhile does not blame the database number', async () => {
    const spinning = busyFor2s(redis.server.url);
    await new Promise((r) => setTimeout(r, 300));
    const outcome = await createRedis({ url: `${redis.server.url}/3`, failFast: true, logger: false }).then(
      async (client) => {
        await closeRedis(client, { timeoutMs: 200 });
        return 'connected';
      },
      (error: Error) => error.message,
    );
    await spinning;
    expect(outcome).not.toMatch(/database/);
  }, 20_000);
});

describe('a SELECT answered NOAUTH beside a stale password (RESP2 sends them together)', () => {
  const redis = useRedisServer({ password: 'Right-Pass-0001' });
  const url = () => `redis://:Stale-Pass@127.0.0.1:${redis.server.port}/3`;

  it('failFast rejects for the password, not the database', async () => {
    const outcome = await createRedis({ url: url(), protocol: 2, failFast: true, logger: false }).then(
      async (client) => {
        await closeRedis(client, { timeoutMs: 200 });
        return 'connected';
      },
      (error: Error) => error.message,
    );
    expect(outcome).toMatch(/cannot reach Redis/);
    expect(outcome).not.toMatch(/database/);
  });

  it('the client keeps trying (a password rotation may complete) and its line is about the password', async () => {
    const lines: string[] = [];
    const client = createRedis({ url: url(), protocol: 2, logger: { warn: (m: string) => lines.push(m) } });
    try {
      await eventually(() => lines.length > 0, 'a line', 5000);
      await new Promise((r) => setTimeout(r, 500));
      expect(lines).toEqual([expect.stringMatching(/unreachable \((WRONGPASS|NOAUTH)/)]);
      expect(client.status).not.toBe('end');
    } finally {
      await closeRedis(client, { timeoutMs: 200 });
    }
  });
});

/** Connections the server accepted while `during` ran (read after it: INFO waits behind a script). */
async function connectionsDuring(admin: Redis, during: () => Promise<unknown>): Promise<number> {
  const read = async () => Number(/total_connections_received:(\d+)/.exec(await admin.info('stats'))?.[1]);
  const before = await read();
  await during();
  return (await read()) - before;
}

describe('with enableReadyCheck: false (ioredis would be ready before any reconnect, resetting its backoff)', () => {
  describe('a SELECT answered BUSY', () => {
    const redis = useRedisServer({ args: ['--busy-reply-threshold', '100'] });

    it('closes the client with one line naming the option, instead of reconnecting many times a second', async () => {
      const admin = redis.track(new Redis(redis.server.url));
      await admin.ping();
      const lines: string[] = [];
      let client: ReturnType<typeof createRedis> | undefined;
      try {
        const connections = await connectionsDuring(admin, async () => {
          const runner = new Redis(redis.server.url);
          const spinning = busyFor2s(redis.server.url);
          await new Promise((r) => setTimeout(r, 300));
          client = createRedis({
            url: `${redis.server.url}/3`,
            enableReadyCheck: false,
            logger: { warn: (m: string) => lines.push(m) },
          });
          await spinning;
          runner.disconnect();
        });
        expect(connections).toBeLessThanOrEqual(4); // the runner, busyFor2s's, the client's one
        expect(client?.status).toBe('end');
        expect(lines).toEqual([expect.stringMatching(/its SELECT failed \(BUSY.*Leave enableReadyCheck on/)]);
      } finally {
        if (client) await closeRedis(client, { timeoutMs: 200 });
      }
    }, 20_000);
  });

  describe('a SELECT answered NOAUTH (no password given, RESP2)', () => {
    const redis = useRedisServer({ password: 'Right-Pass-0001' });

    it('does not reconnect in a loop; the line is about the login', async () => {
      const admin = redis.track(new Redis(redis.server.url));
      await admin.ping();
      const lines: string[] = [];
      let client: ReturnType<typeof createRedis> | undefined;
      try {
        const connections = await connectionsDuring(admin, async () => {
          client = createRedis({
            url: `redis://127.0.0.1:${redis.server.port}/3`,
            protocol: 2,
            enableReadyCheck: false,
            logger: { warn: (m: string) => lines.push(m) },
          });
          await new Promise((r) => setTimeout(r, 2000));
        });
        expect(connections).toBeLessThanOrEqual(3);
        expect(lines[0]).toMatch(/unreachable \(NOAUTH/);
        expect(lines.join('\n')).not.toMatch(/database/);
      } finally {
        if (client) await closeRedis(client, { timeoutMs: 200 });
      }
    });
  });
});
