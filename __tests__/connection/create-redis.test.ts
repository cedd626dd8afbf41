import { spawn } from 'node:child_process';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { resolve } from 'node:path';
import Redis, { type Cluster } from 'ioredis';
import type { RedisClient } from '../../lib/client';
import { closeRedis, connectRedis, createRedis, reconnectDelay } from '../../lib/connection';
import { RedisUnavailableError } from '../../lib/errors';
import { pingRedis } from '../../lib/health';
import { maskUrl } from '../../lib/mask-url';
import { heartbeat, subscribe, subscribeDurably } from '../../lib/pubsub';
import { freePort, type RedisServerHandle, startRedisServer } from '../../lib/testing';
import { useUnhandledRejections } from '../helpers/process';
import { connectAgainAndHear, listen, publishUntilHeard } from '../helpers/pubsub';
import { eventually, useRedisServer } from '../helpers/redis';

describe('createRedis', () => {
  const redis = useRedisServer();

  it('connects by URL with request-path defaults: auto-pipelining, 500 ms command timeout, bounded retries', async () => {
    const client = redis.client();
    expect(await client.ping()).toBe('PONG');
    const options = (client as Redis).options;
    expect(options.enableAutoPipelining).toBe(true);
    expect(options.commandTimeout).toBe(500);
    expect(options.maxRetriesPerRequest).toBe(1);
    expect(options.disconnectTimeout).toBe(500);
  });

  it('uses REDIS_URL when no url is given', async () => {
    const previous = process.env.REDIS_URL;
    process.env.REDIS_URL = redis.server.url;
    try {
      const client = redis.track(createRedis());
      expect((client as Redis).options.port).toBe(redis.server.port);
      expect(await client.ping()).toBe('PONG');
    } finally {
      if (previous === undefined) delete process.env.REDIS_URL;
      else process.env.REDIS_URL = previous;
    }
  });

  it('authenticates as an ACL user from the URL and selects the db number', async () => {
    const admin = redis.plain();
    await admin.call('ACL', 'SETUSER', 'kit', 'on', '>kit-pass', '~*', '&*', '+@all');
    const client = redis.client({ url: `redis://kit:kit-pass@127.0.0.1:${redis.server.port}/3` });
    await client.set('acl-key', '1');
    expect(await client.call('ACL', 'WHOAMI')).toBe('kit');
    await admin.select(3);
    expect(await admin.get('acl-key')).toBe('1');
    await admin.select(0);
    // A later test restarts the server (ACL users gone): this client must not try to log back in.
    await closeRedis(client);
  });

  it('applies keyPrefix to every key, including keys of Lua scripts', async () => {
    const client = redis.client({ keyPrefix: 'tenant-a:' });
    await client.set('greeting', 'hi');
    client.defineCommand('echoKey', { numberOfKeys: 1, lua: "return redis.call('GET', KEYS[1])" });
    const viaScript = await (client as unknown as { echoKey(k: string): Promise<string> }).echoKey(
      'greeting',
    );
    expect(viaScript).toBe('hi');
    expect(await redis.plain().get('tenant-a:greeting')).toBe('hi');
  });

  it('passes any other ioredis option through', () => {
    const client = redis.client({ connectionName: 'kit-test', commandTimeout: 250 });
    expect((client as Redis).options.connectionName).toBe('kit-test');
    expect((client as Redis).options.commandTimeout).toBe(250);
  });

  it('rejects bad options at construction, naming the option', () => {
    expect(() => createRedis({ url: 'http://localhost:6379' })).toThrow(
      /"url" must start with redis:\/\/ or rediss:\/\//,
    );
    expect(() => createRedis({ commandTimeout: 0 })).toThrow(/"commandTimeout"/);
    expect(() => createRedis({ cluster: { nodes: [] } })).toThrow(/"cluster.nodes"/);
    expect(() => createRedis({ sentinel: { name: '', sentinels: [] } })).toThrow(/"sentinel"/);
  });

  it('uses TLS for rediss:// URLs', () => {
    const client = createRedis({ url: 'rediss://127.0.0.1:1', lazyConnect: true });
    expect((client as Redis).options.tls).toBeDefined();
    client.disconnect();
  });

  it('uses TLS for an upper-case REDISS:// too (ioredis alone would send the password in clear)', () => {
    for (const url of ['REDISS://:pw@127.0.0.1:1', 'Rediss://127.0.0.1:1']) {
      const client = createRedis({ url, lazyConnect: true });
      expect((client as Redis).options.tls).toBeDefined();
      client.disconnect();
    }
    const previous = process.env.REDIS_URL;
    process.env.REDIS_URL = 'REDISS://:pw@127.0.0.1:1';
    try {
      const client = createRedis({ lazyConnect: true });
      expect((client as Redis).options.tls).toBeDefined();
      client.disconnect();
    } finally {
      if (previous === undefined) delete process.env.REDIS_URL;
      else process.env.REDIS_URL = previous;
    }
  });

  it('names the option when a password holds a lone "%" (ioredis would throw a bare URIError)', () => {
    expect(() => createRedis({ url: 'redis://:50%off@127.0.0.1:1', lazyConnect: true })).toThrow(
      /"url" has a user name or password that is not valid percent-encoding; got "redis:\/\/:\*\*\*\*@127/,
    );
    const client = createRedis({ url: 'redis://:50%25off@127.0.0.1:1', lazyConnect: true });
    expect((client as Redis).options.password).toBe('50%off');
    client.disconnect();
  });

  it('connects to the host and port options, not to REDIS_URL or the default', async () => {
    const previous = process.env.REDIS_URL;
    process.env.REDIS_URL = `redis://127.0.0.1:${redis.server.port + 1}`;
    try {
      const client = redis.track(createRedis({ host: '127.0.0.1', port: redis.server.port }));
      expect((client as Redis).options.port).toBe(redis.server.port);
      expect(await client.ping()).toBe('PONG');
    } finally {
      if (previous === undefined) delete process.env.REDIS_URL;
      else process.env.REDIS_URL = previous;
    }
    expect(() => createRedis({ url: redis.server.url, port: 1 })).toThrow(
      /"url" and "port" cannot be combined/,
    );
  });

  it('keeps the request-path timeouts of Cluster nodes given their own redisOptions (a password, tls)', () => {
    const client = createRedis({
      cluster: { nodes: ['127.0.0.1:1'], options: { lazyConnect: true, redisOptions: { password: 'pw' } } },
    });
    const nodeOptions = (client as unknown as { options: { redisOptions: Record<string, unknown> } }).options
      .redisOptions;
    expect(nodeOptions).toMatchObject({
      password: 'pw',
      commandTimeout: 500,
      maxRetriesPerRequest: 1,
      disconnectTimeout: 500,
    });
    client.disconnect();
  });

  it("never shows a Cluster node's own password in the unreachable error", async () => {
    const node = { host: '127.0.0.1', port: redis.server.port + 1, password: 'hunter2' };
    const error = await connectRedis({ cluster: { nodes: [node] }, connectTimeout: 300, logger: false }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).toMatch(new RegExp(`cannot reach Redis at cluster 127\\.0\\.0\\.1:${node.port}`));
    expect(error?.message).not.toContain('hunter2');
  });

  it('gives every Cluster node the user, password and TLS of a node given as a URL (ioredis gave them to that startup node only: NOAUTH from the rest)', () => {
    const client = createRedis({
      cluster: { nodes: ['rediss://app:s%40cret@127.0.0.1:7000', '127.0.0.1:7001'] },
      lazyConnect: true,
      logger: false,
    }) as Cluster;
    expect((client as unknown as { startupNodes: unknown }).startupNodes).toEqual([
      { host: '127.0.0.1', port: 7000 },
      { host: '127.0.0.1', port: 7001 },
    ]);
    expect(client.options.redisOptions).toMatchObject({
      username: 'app',
      password: 's@cret',
      tls: {},
      commandTimeout: 500,
    });
    client.disconnect();
    // The app's own redisOptions win.
    const own = createRedis({
      cluster: {
        nodes: ['redis://:fromurl@127.0.0.1:7000'],
        options: { redisOptions: { password: 'mine' } },
      },
      lazyConnect: true,
      logger: false,
    }) as Cluster;
    expect(own.options.redisOptions?.password).toBe('mine');
    own.disconnect();
    // So do its top-level options: a private CA is not dropped for the URL's bare TLS.
    const topLevel = createRedis({
      cluster: { nodes: ['rediss://:fromurl@127.0.0.1:7000'] },
      tls: { ca: 'private-ca' },
      password: 'top',
      lazyConnect: true,
      logger: false,
    }) as Cluster;
    expect(topLevel.options.redisOptions).toMatchObject({ tls: { ca: 'private-ca' }, password: 'top' });
    topLevel.disconnect();
    expect(() =>
      createRedis({ cluster: { nodes: ['redis://:100%@127.0.0.1:7000'] }, lazyConnect: true, logger: false }),
    ).toThrow(
      /node address "redis:\/\/:\*\*\*\*@127\.0\.0\.1:7000" has a user or password that does not decode/,
    );
  });

  it('refuses a sentinel given as a URL without showing its password', () => {
    const make = () =>
      createRedis({
        sentinel: { name: 'm', sentinels: ['redis://:s3cret@127.0.0.1:26379'] },
        lazyConnect: true,
        logger: false,
      });
    expect(make).toThrow(/node address "redis:\/\/:\*\*\*\*@127\.0\.0\.1:26379" must look like host:port/);
    expect(make).not.toThrow(/s3cret/);
  });

  it('builds a Sentinel client from the sentinel option', () => {
    const client = createRedis({
      sentinel: { name: 'mymaster', sentinels: ['127.0.0.1:26379'] },
      lazyConnect: true,
    });
    expect((client as Redis).options.sentinels).toEqual([{ host: '127.0.0.1', port: 26379 }]);
    expect((client as Redis).options.name).toBe('mymaster');
    client.disconnect();
  });

  it('fails a command within the timeout while the server is dead, and recovers after restart without a new client', async () => {
    const client = redis.client({ commandTimeout: 300 });
    await client.set('survives', 'no');
    await redis.server.kill();
    const started = Date.now();
    await expect(client.get('survives')).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(2000);
    // While it stays down, many commands must not pile up and each one fails on its own.
    const results = await Promise.allSettled(Array.from({ length: 50 }, () => client.get('x')));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    await redis.server.restart();
    await eventually(
      async () => (await client.ping().catch(() => null)) === 'PONG',
      'the client to reconnect',
      8000,
    );
    await client.set('back', 'yes');
    expect(await client.get('back')).toBe('yes');
  });

  it('failFast: rejects with the masked URL when Redis is unreachable', async () => {
    const port = redis.server.port + 1;
    await expect(
      createRedis({ url: `redis://user:hunter2@127.0.0.1:${port}`, failFast: true, connectTimeout: 300 }),
    ).rejects.toThrow(new RegExp(`cannot reach Redis at redis://user:\\*\\*\\*\\*@127\\.0\\.0\\.1:${port}`));
  });

  it('failFast: rejects a replica, which would refuse every write, naming the fix', async () => {
    await redis.plain().replicaof('127.0.0.1', '1');
    try {
      await expect(createRedis({ url: redis.server.url, failFast: true, logger: false })).rejects.toThrow(
        /Redis at .* is a replica, which refuses writes \(ROLE slave\)\. Point the URL at the master/,
      );
    } finally {
      await redis.plain().replicaof('NO', 'ONE');
    }
  });

  it('failFast with logger: false rejects without ioredis printing its own stack traces', async () => {
    // In its own process: under jest, ioredis never prints (its `instanceof Error` check fails across
    // jest's realms), so only a real process shows what users see.
    const port = await freePort();
    const script = `
      const { createRedis } = require(${JSON.stringify(resolve(__dirname, '../../lib/connection.ts'))});
      createRedis({ url: 'redis://127.0.0.1:${port}', failFast: true, connectTimeout: 300, logger: false })
        .catch((e) => console.log('rejected:', e.message))
        .then(() => setTimeout(() => {}, 500));`;
    const child = spawn(process.execPath, ['--import', 'tsx', '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (err += c));
    await new Promise((r) => child.once('exit', r));
    expect(out).toMatch(/rejected: express-redis-kit: cannot reach Redis/);
    expect(err).toBe('');
  });

  it('failFast with logger: false hands over a client with no error listener of the kit left on it', async () => {
    const client = redis.track(await connectRedis({ url: redis.server.url, logger: false }));
    expect(client.listenerCount('error')).toBe(0);
  });

  it('keeps the default command timeout for an option given as undefined (forwarded config)', () => {
    const client = redis.track(
      createRedis({ url: redis.server.url, commandTimeout: undefined, lazyConnect: true }),
    );
    expect((client.options as { commandTimeout?: number }).commandTimeout).toBe(500);
  });

  it('failFast / connectRedis: resolves a ready client when Redis answers', async () => {
    const client = redis.track(await connectRedis({ url: redis.server.url }));
    expect(client.status).toBe('ready');
  });
});

describe('pingRedis', () => {
  const redis = useRedisServer();

  it('reports ok, latency and mode', async () => {
    const health = await pingRedis(redis.client());
    expect(health).toEqual({ ok: true, latencyMs: expect.any(Number), mode: 'standalone' });
  });

  it('never throws and never waits past its timeout when Redis is paused', async () => {
    const client = redis.client({ commandTimeout: 5000 });
    await client.ping();
    await redis.plain().call('CLIENT', 'PAUSE', '1500', 'ALL');
    const started = Date.now();
    const health = await pingRedis(client, { timeoutMs: 200 });
    expect(health.ok).toBe(false);
    expect(health.error).toMatch(/200 ms/);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('reports a replica, which answers PING but refuses every write, as not ok', async () => {
    const client = redis.client();
    await redis.plain().replicaof('127.0.0.1', '1');
    try {
      const health = await pingRedis(client);
      expect([health.ok, health.error]).toEqual([false, expect.stringMatching(/connected to a replica/)]);
    } finally {
      await redis.plain().replicaof('NO', 'ONE');
    }
    expect((await pingRedis(client)).ok).toBe(true);
  });

  /** Connections the server has accepted so far (asked on one admin connection, made up front). */
  let admin: Redis;
  beforeAll(async () => {
    admin = redis.plain();
    await admin.ping();
  });
  const accepted = async () =>
    Number(/total_connections_received:(\d+)/.exec(String(await admin.info('stats')))![1]);

  it("leaves the app's MULTI and its connection alone (ROLE is only queued there)", async () => {
    const client = redis.plain();
    await client.ping();
    const before = await accepted();
    await client.multi({ pipeline: false });
    const set = client.set('tx:k', 'v');
    const health = await pingRedis(client);
    const exec = await client.exec();
    await set;
    expect(health.ok).toBe(true);
    expect(exec?.[0]).toEqual([null, 'OK']);
    expect(await admin.get('tx:k')).toBe('v');
    expect((await accepted()) - before).toBe(0);
  });

  it('never reconnects a client that was on a replica from the start (made for one on purpose)', async () => {
    await admin.replicaof('127.0.0.1', '1');
    const client = redis.client();
    try {
      await client.ping();
      const before = await accepted();
      for (let i = 0; i < 3; i++) {
        expect((await pingRedis(client)).ok).toBe(false);
        await new Promise((resolve) => setTimeout(resolve, 1050));
      }
      expect((await accepted()) - before).toBe(0);
    } finally {
      await admin.replicaof('NO', 'ONE');
    }
  });

  it('a client seen on a master, then on a replica, connects again at most once a second, writes and checks together', async () => {
    const client = redis.client();
    expect((await pingRedis(client)).ok).toBe(true);
    await admin.replicaof('127.0.0.1', '1');
    try {
      const before = await accepted();
      const until = performance.now() + 2000;
      for (let n = 0; performance.now() < until; n++) {
        await client.set('k', 'v').catch(() => {});
        if (n % 20 === 0) await pingRedis(client);
      }
      expect((await accepted()) - before).toBeLessThanOrEqual(3);
      expect((await accepted()) - before).toBeGreaterThanOrEqual(1);
    } finally {
      await admin.replicaof('NO', 'ONE');
    }
  });

  it('falls back to PING for an ACL user that may not ask for the role', async () => {
    await redis.plain().call('ACL', 'SETUSER', 'no-role', 'on', '>pw', '~*', '&*', '+@all', '-role');
    const client = redis.client({ username: 'no-role', password: 'pw' });
    expect(await pingRedis(client)).toEqual({ ok: true, latencyMs: expect.any(Number), mode: 'standalone' });
  });
});

/**
 * Runs `close` on `client` (subscribed through the kit) while its server is down and it reconnects,
 * then brings the server back: → how many connections came back with it within 2.5 s (0 expected).
 */
async function connectionsBackAfterClose(
  make: (url: string) => RedisClient,
  close: (client: RedisClient) => Promise<void>,
): Promise<number> {
  const server = await startRedisServer();
  try {
    const client = make(server.url);
    await subscribe(client, 'news', () => {});
    await server.kill();
    await eventually(() => client.status === 'reconnecting', 'the client reconnecting');
    await close(client);
    await server.restart();
    const admin = new Redis(server.url);
    await new Promise((r) => setTimeout(r, 2500));
    const others =
      String(await admin.client('LIST'))
        .trim()
        .split('\n').length - 1;
    admin.disconnect();
    return others;
  } finally {
    await server.stop();
  }
}

describe('closeRedis', () => {
  const redis = useRedisServer();

  it('quits the client and the shared subscriber connection', async () => {
    const client = createRedis({ url: redis.server.url });
    const publisher = redis.plain();
    const received: string[] = [];
    await subscribe(client, 'news', (message) => received.push(message));
    await publisher.publish('news', 'hello');
    await eventually(() => received.length === 1, 'the message');
    await closeRedis(client);
    expect(client.status).toBe('end');
    // No subscriber left: a publish reaches nobody.
    expect(await publisher.publish('news', 'again')).toBe(0);
  });

  it('disconnects a client whose server is gone without waiting for QUIT', async () => {
    const client = createRedis({ url: `redis://127.0.0.1:${redis.server.port + 2}` });
    const started = Date.now();
    await closeRedis(client, { timeoutMs: 300 });
    expect(client.status).toBe('end');
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('closes at once a client (and its subscriber) reconnecting to a server that went away', async () => {
    let closedIn = 0;
    const back = await connectionsBackAfterClose(
      (url) => createRedis({ url, logger: false }),
      async (client) => {
        const started = Date.now();
        await closeRedis(client);
        closedIn = Date.now() - started;
      },
    );
    // ioredis never ends a client closed while reconnecting: this waited out 2 × timeoutMs.
    expect(closedIn).toBeLessThan(300);
    // Neither the client nor its subscriber comes back with the server.
    expect(back).toBe(0);
  });
});

describe('subscribe on a closed client', () => {
  const redis = useRedisServer();

  it('refuses to subscribe through a client handed to closeRedis (its connection would reconnect for ever)', async () => {
    const client = redis.client();
    const closing = closeRedis(client);
    await expect(subscribe(client, 'late', () => {})).rejects.toThrow(/the Redis client is closed/);
    await closing;
    await expect(subscribe(client, 'late', () => {})).rejects.toBeInstanceOf(RedisUnavailableError);
    expect(() => subscribeDurably(client, 'late', () => {})).toThrow(/the Redis client is closed/);
  });

  it.each(['disconnect', 'quit'] as const)(
    'closes the kit subscriber when the app calls %s() on its own client while Redis is away',
    async (how) => {
      const back = await connectionsBackAfterClose(
        (url) => {
          const client = new Redis(url);
          client.on('error', () => {});
          return client;
        },
        async (client) => {
          if (how === 'quit') client.quit().catch(() => {});
          else client.disconnect();
        },
      );
      expect(back).toBe(0);
    },
  );
});

describe('connection errors', () => {
  it('says once that Redis is unreachable and once that it is back, instead of a stack trace per reconnect attempt', async () => {
    const port = await freePort();
    const lines: string[] = [];
    const printed = jest.spyOn(console, 'error').mockImplementation(() => {});
    const client = createRedis({
      url: `redis://:S3cretPass@127.0.0.1:${port}`,
      maxReconnectDelay: 50,
      logger: { warn: (line) => lines.push(line) },
    });
    let server: RedisServerHandle | undefined;
    try {
      let attempts = 0;
      client.on('reconnecting', () => attempts++);
      await eventually(() => attempts >= 4, 'several reconnect attempts');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        /Redis at redis:\/\/:\*\*\*\*@127\.0\.0\.1:\d+ is unreachable \(.*ECONNREFUSED.*\)/,
      );
      expect(printed).not.toHaveBeenCalled(); // ioredis's "[ioredis] Unhandled error event"
      server = await startRedisServer({ port, password: 'S3cretPass' });
      await eventually(() => client.status === 'ready', 'the reconnect');
      expect(lines).toHaveLength(2);
      expect(lines[1]).toMatch(/is reachable again/);
      expect(lines.join('\n')).not.toContain('S3cretPass');
    } finally {
      printed.mockRestore();
      await closeRedis(client, { timeoutMs: 200 });
      await server?.stop();
    }
  });

  it('refuses a logger without warn(), naming the option', () => {
    expect(() => createRedis({ lazyConnect: true, logger: console.log as never })).toThrow(/option "logger"/);
  });
});

describe('subscribe', () => {
  const redis = useRedisServer();
  const unhandled = useUnhandledRejections();

  it('subscribes through an app client made with enableOfflineQueue: false', async () => {
    // Its first SUBSCRIBE went out on the kit's new connection before it was up, and was refused.
    const client = redis.track(new Redis(redis.server.url, { enableOfflineQueue: false }));
    await eventually(() => client.status === 'ready', 'the app client ready');
    const { heard, unsubscribe } = await listen(client, 'no-offline-queue');
    await publishUntilHeard(client, 'no-offline-queue', 'hello', heard, 'the message');
    await unsubscribe();
  });

  it('tells subscribers when their connection comes back after a drop (messages sent meanwhile are lost)', async () => {
    const client = redis.client();
    const { heard: received, counts, unsubscribe } = await listen(client, 'feed');
    const admin = redis.plain();
    await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await eventually(() => counts.reconnects === 1, 'the reconnect hook');
    // Resubscribed by itself: messages flow again.
    await publishUntilHeard(admin, 'feed', 'after', received, 'a message after the reconnect');
    await unsubscribe();
    await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await new Promise((r) => setTimeout(r, 300));
    expect(counts.reconnects).toBe(1);
  });

  it('runs onReconnect only once its channels are subscribed again: what is published from the hook on is heard', async () => {
    const client = redis.client();
    const admin = redis.plain();
    const received: string[] = [];
    const listeners: number[] = [];
    const hooked: Array<Promise<void>> = [];
    const unsubscribe = await subscribe(client, 'feed', (m) => received.push(m), {
      onReconnect: () => {
        hooked.push(
          admin.publish('feed', 'from-the-hook').then((n) => {
            listeners.push(n);
          }),
        );
      },
    });
    try {
      await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      await eventually(() => hooked.length === 1, 'the reconnect hook');
      await hooked[0];
      expect(listeners).toEqual([1]);
      await eventually(() => received.includes('from-the-hook'), 'the message published by the hook');
    } finally {
      await unsubscribe();
    }
  });

  it.each(['disconnect', 'quit'] as const)(
    'hears its channels again when the app calls %s() on its own client and connects it again',
    async (how) => {
      const client = redis.client();
      const subscribed = await listen(client, 'feed');
      const admin = redis.plain();
      try {
        if (how === 'quit') await client.quit();
        else client.disconnect();
        await eventually(() => client.status === 'end', 'the client ended');
        // Closed with its client: nothing is left subscribed meanwhile.
        await eventually(
          async () => (await admin.publish('feed', 'while-closed')) === 0,
          'no subscriber left',
        );
        // Messages sent while it was closed were lost: the reconnect hook says so.
        await connectAgainAndHear(client, admin, 'feed', subscribed);
        expect(subscribed.heard).not.toContain('while-closed');
        expect(unhandled).toEqual([]);
      } finally {
        await subscribed.unsubscribe();
      }
      // Unsubscribed on the new connection.
      await eventually(async () => (await admin.publish('feed', 'gone')) === 0, 'nobody subscribed');
    },
  );

  it('subscribes through a client the app quit and is connecting again, before it is ready', async () => {
    const client = redis.client();
    const admin = redis.plain();
    const reconnects = { one: 0, two: 0 };
    const first = await subscribe(client, 'one', () => {}, { onReconnect: () => reconnects.one++ });
    const ended = new Promise((resolve) => client.once('end', resolve));
    await client.quit();
    await ended;
    const connecting = client.connect();
    expect(client.status).toBe('connecting');
    const received: string[] = [];
    const second = await subscribe(client, 'two', (m) => received.push(m), {
      onReconnect: () => reconnects.two++,
    });
    await connecting;
    try {
      await publishUntilHeard(
        admin,
        'two',
        'hello',
        received,
        'a message on the channel subscribed while connecting',
      );
      await eventually(() => reconnects.one === 1, "the first subscription's reconnect hook");
      // The second one missed nothing: subscribed on the new connection.
      expect(reconnects.two).toBe(0);
    } finally {
      await second();
      await first();
    }
  });

  it('closes the kit subscriber when the app disconnects its client while only the client reconnects', async () => {
    const client = redis.client();
    const admin = redis.plain();
    await subscribe(client, 'left', () => {});
    // The client's own connection drops; the subscriber's stays up, so it never looks by itself.
    client.once('reconnecting', () => client.disconnect());
    await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    await eventually(async () => (await admin.publish('left', 'x')) === 0, 'no subscriber left', 3000);
  });

  // ioredis's own resubscribe leaves its rejection unhandled: a refused one crashed the process.
  it('keeps retrying a resubscribe that Redis refuses after a drop (an ACL change), until it lands', async () => {
    const admin = redis.plain();
    await admin.call('ACL', 'SETUSER', 'feeds', 'on', '>pw', '~*', '&*', '+@all');
    const client = redis.client({ url: `redis://feeds:pw@127.0.0.1:${redis.server.port}` });
    const received: string[] = [];
    const errors: unknown[] = [];
    let landed = 0;
    const durable = subscribeDurably(client, 'bus', (m) => received.push(m), {
      onError: (error) => errors.push(error),
      onLanded: () => landed++,
    });
    await durable.ready;
    const unsubscribe = await subscribe(client, 'feed', (m) => received.push(m));
    try {
      // Redis drops the subscriber connection itself when its channels are taken away.
      await admin.call('ACL', 'SETUSER', 'feeds', 'resetchannels', '&other');
      await eventually(() => errors.length === 1, 'the refused resubscribe reported');
      expect(String(errors[0])).toMatch(/NOPERM/);
      await new Promise((r) => setTimeout(r, 700));
      await admin.call('ACL', 'SETUSER', 'feeds', 'resetchannels', '&*');
      await eventually(
        async () => {
          await admin.publish('bus', 'b');
          await admin.publish('feed', 'f');
          return received.includes('b') && received.includes('f');
        },
        'messages on both channels once the ACL allows them again',
        8000,
      );
      expect(landed).toBe(1);
      expect(unhandled).toEqual([]);
    } finally {
      await unsubscribe();
      await durable.unsubscribe();
    }
  });
});

describe('helpers', () => {
  it('masks passwords in URLs', () => {
    expect(maskUrl('redis://u:p@h:1/2')).toBe('redis://u:****@h:1/2');
    expect(maskUrl('redis://h:1')).toBe('redis://h:1');
  });

  it.each([
    ['redis://:S3cret/Pass@h:6379', 'redis://:****@h:6379'],
    ['redis://u:S3cret#Pass@h:6379/0', 'redis://u:****@h:6379/0'],
    ['redis://u:S3c@ret@h:6379', 'redis://u:****@h:6379'],
    ['user:S3cretPass@h:6379', 'user:****@h:6379'],
    ['redis:/user:S3cretPass@h:6379', 'redis:/user:****@h:6379'],
    // ioredis reads user info without a colon as a user name, as URLs do: not masked.
    ['redis://ada@h:6379', 'redis://ada@h:6379'],
    ['h:6379?password=S3cretPass&db=1', 'h:6379?password=****&db=1'],
    [
      'redis://:pw@h:6379/0?sentinelPassword=S3cretPass&tls.passphrase=S3cretPass&db=1',
      'redis://:****@h:6379/0?sentinelPassword=****&tls.passphrase=****&db=1',
    ],
    ['redis://h:6379/0?sentinel%50assword=S3cretPass', 'redis://h:6379/0?sentinel%50assword=****'],
    ['redis://user:pw@host:6379/0?name=a@b', 'redis://user:****@host:6379/0?name=a@b'],
    ['redis://host:6379/0?clientName=x@y', 'redis://host:6379/0?clientName=x@y'],
    ['redis://u:p@[::1]:6379', 'redis://u:****@[::1]:6379'],
    ['redis://u:pa?ss@host:6379', 'redis://u:****@host:6379'],
    // These parse, as host "u", port 12 and a path, query or fragment holding the rest.
    ['redis://u:12/ss@host:6379', 'redis://u:****@host:6379'],
    ['redis://u:12?ss@host:6379', 'redis://u:****@host:6379'],
    ['redis://u:12#ss@host:6379', 'redis://u:****@host:6379'],
    // …and these with user info ("u", password "p", host "ss") before it.
    ['redis://u:p@ss/word@host:6379', 'redis://u:****@host:6379'],
    ['redis://u:p@ss?word@host:6379', 'redis://u:****@host:6379'],
    ['redis://u:p@ss#word@host:6379', 'redis://u:****@host:6379'],
  ])('masks the password of the malformed or unusual URL %s', (url, masked) => {
    expect(maskUrl(url)).toBe(masked);
  });

  it('reconnect delay grows exponentially, is jittered, and is capped', () => {
    for (let i = 0; i < 200; i++) {
      const d = reconnectDelay(30, 2000);
      expect(d).toBeGreaterThanOrEqual(1000);
      expect(d).toBeLessThanOrEqual(2000);
    }
    expect(reconnectDelay(1, 2000)).toBeLessThanOrEqual(100);
    const samples = new Set(Array.from({ length: 20 }, () => reconnectDelay(8, 2000)));
    expect(samples.size).toBeGreaterThan(1);
  });
});

describe('subscriber heartbeat', () => {
  const redis = useRedisServer();
  const saved = { ...heartbeat };
  afterEach(() => Object.assign(heartbeat, saved));

  it('counts messages as signs of life: a burst that delays the PONG past its deadline drops nothing', async () => {
    Object.assign(heartbeat, { everyMs: 100, timeoutMs: 150 });
    const client = redis.client();
    let heard = 0;
    let reconnects = 0;
    const unsubscribe = await subscribe(
      client,
      'burst',
      () => {
        heard++;
        const until = performance.now() + 0.2;
        while (performance.now() < until) {
          // The handler's work: the burst takes about 2 s to get through.
        }
      },
      { onReconnect: () => reconnects++ },
    );
    try {
      // 10 MB at once (well under Redis's 32 MB pub/sub output limit, even when read slowly), read
      // about 2 MB at a time with 0.4 s of handling each: a PING sent after the first read is answered
      // behind all of them.
      await redis
        .plain()
        .eval("local p = string.rep('x', 1000) for i = 1, 10000 do redis.call('PUBLISH', 'burst', p) end", 0);
      await eventually(() => heard === 10000, 'every message of the burst', 20_000);
      expect(reconnects).toBe(0);
    } finally {
      await unsubscribe();
    }
  });

  it('drops a connection that connected but never gets ready (a stopped process still accepts TCP)', async () => {
    Object.assign(heartbeat, { everyMs: 100, timeoutMs: 150 });
    // A peer that accepts and never answers: a frozen redis-server, as far as a new connection sees.
    const accepted: Socket[] = [];
    const silent = createServer((socket) => {
      accepted.push(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const client = new Redis((silent.address() as AddressInfo).port, '127.0.0.1', {
      lazyConnect: true,
      retryStrategy: () => 50,
    });
    client.on('error', () => {});
    try {
      client.connect().catch(() => {});
      const durable = subscribeDurably(client, 'never', () => {});
      // The client's own connection, then the subscriber's, and again each time it gives up on one.
      await eventually(() => accepted.length >= 4, 'the subscriber trying new connections', 3000);
      await durable.unsubscribe();
    } finally {
      client.disconnect();
      for (const socket of accepted) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('drops and reopens a subscriber connection that went silent (a NAT forgot the flow), then hears again', async () => {
    Object.assign(heartbeat, { everyMs: 200, timeoutMs: 300 });
    // A proxy that can stop passing bytes on the connections it has, without closing them.
    const silenced = new Set<Socket>();
    const sockets: Socket[] = [];
    const live: Socket[] = [];
    let silent = false;
    const proxy = createServer((client) => {
      const upstream = connect(redis.server.port, '127.0.0.1');
      const pair = [client, upstream] as const;
      for (const [a, b] of [pair, [upstream, client] as const]) {
        a.on('data', (chunk) => {
          if (!silenced.has(client)) b.write(chunk);
        });
        a.on('close', () => b.destroy());
        a.on('error', () => {});
      }
      sockets.push(client, upstream);
      if (silent) return;
      live.push(client);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const client = new Redis((proxy.address() as AddressInfo).port, '127.0.0.1', { lazyConnect: true });
    client.on('error', () => {});
    const admin = redis.plain();
    const received: string[] = [];
    let reconnects = 0;
    try {
      await client.connect();
      const unsubscribe = await subscribe(client, 'quiet', (m) => received.push(m), {
        onReconnect: () => reconnects++,
      });
      silent = true;
      for (const socket of live) silenced.add(socket);
      await admin.publish('quiet', 'lost');
      await eventually(() => reconnects === 1, 'the subscriber reopened');
      await publishUntilHeard(admin, 'quiet', 'heard', received, 'a message on the new connection');
      expect(received).not.toContain('lost');
      await unsubscribe();
    } finally {
      client.disconnect();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });
});
