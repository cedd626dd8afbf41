import type Redis from 'ioredis';
import { configureBreaker } from '../../lib/breaker';
import { closeRedis, createRedis } from '../../lib/connection';
import { useRedisServer } from '../helpers/redis';

function thrown(make: () => unknown): Error {
  try {
    const result = make();
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<unknown>).catch(() => {});
    }
    // A client slipped through: close it so the test fails on the assertion, not on a leak.
    if (result && typeof (result as Redis).disconnect === 'function') (result as Redis).disconnect();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected the call to throw');
}

describe('createRedis refuses a URL it cannot use, naming the option and never showing the password', () => {
  it.each([
    [
      'the scheme forgotten',
      'user:S3cretPass@redis.internal:6379',
      /option "url" must start with redis:\/\//,
    ],
    ['one slash', 'redis:/user:S3cretPass@redis.internal:6379', /option "url" must start with/],
    ['a password in the query', 'redis.internal:6379?password=S3cretPass', /option "url" must start with/],
    [
      'an unencoded / in the password',
      'redis://:S3cret/Pass@127.0.0.1:6379',
      /option "url" is not a valid URL/,
    ],
    ['a port out of range', 'redis://:S3cretPass@127.0.0.1:63790000', /option "url" is not a valid URL/],
    [
      'a password that parses as a port and a path',
      'redis://default:12/S3cret@127.0.0.1:6379',
      /option "url" has an "@" after its host/,
    ],
    [
      'a password with an unencoded ?',
      'redis://default:pa?S3cret@127.0.0.1:6379',
      /option "url" is not a valid URL/,
    ],
    // These parse with user info (user "default", password "p", host "ss"), the rest as a path…
    [
      'a password with an @ and then a /',
      'redis://default:p@ss/S3cret@127.0.0.1:6379',
      /has an "@" after its host/,
    ],
    [
      'a password with an @ and then a ?',
      'redis://default:p@ss?S3cret@127.0.0.1:6379',
      /has an "@" after its host/,
    ],
    [
      'a password with an @ and then a #',
      'redis://default:p@ss#S3cret@127.0.0.1:6379',
      /has an "@" after its host/,
    ],
  ])('%s', (_case, url, message) => {
    const error = thrown(() => createRedis({ url, lazyConnect: true }));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toMatch(message);
    expect(error.message).not.toContain('S3cret');
    expect(JSON.stringify(error, Object.getOwnPropertyNames(error))).not.toContain('S3cret');
  });

  it.each([
    ['cluster.nodes', { cluster: { nodes: ['redis://default:p@ss/S3cret@127.0.0.1:7000'] } }],
    ['REDIS_CLUSTER_NODES', {}],
  ])('refuses a %s URL whose password holds an @ and then a /, never showing it', (_source, options) => {
    const saved = process.env.REDIS_CLUSTER_NODES;
    if (_source === 'REDIS_CLUSTER_NODES')
      process.env.REDIS_CLUSTER_NODES = 'redis://default:p@ss/S3cret@127.0.0.1:7000';
    try {
      const error = thrown(() => createRedis({ lazyConnect: true, logger: false, ...options }));
      expect(error).toBeInstanceOf(TypeError);
      expect(error.message).toMatch(/has an "@" after its host/);
      expect(error.message).not.toContain('S3cret');
    } finally {
      if (saved === undefined) delete process.env.REDIS_CLUSTER_NODES;
      else process.env.REDIS_CLUSTER_NODES = saved;
    }
  });

  it('accepts braces in keyPrefix outside a Cluster, where they are harmless, and disconnectTimeout 0', () => {
    createRedis({ lazyConnect: true, url: 'redis://127.0.0.1:1', keyPrefix: '{app}:' }).disconnect();
    createRedis({ lazyConnect: true, url: 'redis://127.0.0.1:1', disconnectTimeout: 0 }).disconnect();
  });

  it.each([
    ['REDIS_URL', 'localhost:6379'],
    ['REDIS_URL', '/tmp/redis.sock'],
    ['REDIS_URL', 'REDIS://localhost:6379/1'],
    ['url', 'REDIS://localhost:6379/1'],
    ['url', 'rediss://:pw@localhost:6380'],
    ['url', 'redis://localhost?family=6'],
  ])('accepts the %s %s, as ioredis does', (source, value) => {
    const previous = process.env.REDIS_URL;
    if (source === 'REDIS_URL') process.env.REDIS_URL = value;
    try {
      const client = createRedis({ lazyConnect: true, ...(source === 'url' ? { url: value } : {}) });
      client.disconnect();
    } finally {
      if (previous === undefined) delete process.env.REDIS_URL;
      else process.env.REDIS_URL = previous;
    }
  });

  it('leaves REDIS_URL alone when REDIS_CLUSTER_NODES is what the client uses', () => {
    const saved = { url: process.env.REDIS_URL, nodes: process.env.REDIS_CLUSTER_NODES };
    process.env.REDIS_URL = 'redis://:S3cret/Pass@127.0.0.1:6379';
    process.env.REDIS_CLUSTER_NODES = '127.0.0.1:1';
    try {
      const client = createRedis({ lazyConnect: true });
      client.disconnect();
    } finally {
      for (const [name, value] of [
        ['REDIS_URL', saved.url],
        ['REDIS_CLUSTER_NODES', saved.nodes],
      ] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  it.each([
    ['default:pa/S3cret@127.0.0.1:6379', /option "REDIS_URL" is not a valid URL; got "default:\*\*\*\*@127/],
    ['//default:pa#S3cret@127.0.0.1:6379', /option "REDIS_URL" (is not a valid URL|has an "@")/],
    ['http://127.0.0.1:6379', /option "REDIS_URL" must start with redis:\/\//],
  ])('refuses the REDIS_URL %s, as ioredis would read it, without showing the password', (value, message) => {
    const previous = process.env.REDIS_URL;
    process.env.REDIS_URL = value;
    try {
      const error = thrown(() => createRedis({ lazyConnect: true }));
      expect(error.message).toMatch(message);
      expect(error.message).not.toContain('S3cret');
    } finally {
      if (previous === undefined) delete process.env.REDIS_URL;
      else process.env.REDIS_URL = previous;
    }
  });

  it('checks REDIS_URL the same way when it is what the client would use', () => {
    const previous = process.env.REDIS_URL;
    process.env.REDIS_URL = 'redis://:S3cret/Pass@127.0.0.1:6379';
    try {
      const error = thrown(() => createRedis({ lazyConnect: true }));
      expect(error.message).toMatch(/option "REDIS_URL" is not a valid URL/);
      expect(error.message).not.toContain('S3cret');
    } finally {
      if (previous === undefined) delete process.env.REDIS_URL;
      else process.env.REDIS_URL = previous;
    }
  });
});

describe('createRedis checks the options it reads', () => {
  it.each<[string, object, typeof TypeError | typeof RangeError, RegExp]>([
    [
      'failFast string',
      { failFast: 'false' },
      TypeError,
      /option "failFast" must be true or false; got "false"/,
    ],
    [
      'enableAutoPipelining string',
      { enableAutoPipelining: 'false' },
      TypeError,
      /option "enableAutoPipelining" must be true or false; got "false"/,
    ],
    ['commandTimeout string', { commandTimeout: '500' }, TypeError, /option "commandTimeout".*got "500"/],
    ['commandTimeout negative', { commandTimeout: -1 }, RangeError, /option "commandTimeout".*got -1/],
    ['commandTimeout NaN', { commandTimeout: Number.NaN }, RangeError, /option "commandTimeout".*got NaN/],
    ['commandTimeout too long', { commandTimeout: 2 ** 31 }, RangeError, /option "commandTimeout"/],
    ['connectTimeout string', { connectTimeout: '2000' }, TypeError, /option "connectTimeout".*got "2000"/],
    ['connectTimeout zero', { connectTimeout: 0 }, RangeError, /option "connectTimeout"/],
    [
      'maxReconnectDelay string',
      { maxReconnectDelay: '2000' },
      TypeError,
      /option "maxReconnectDelay".*got "2000"/,
    ],
    ['maxReconnectDelay negative', { maxReconnectDelay: -5 }, RangeError, /option "maxReconnectDelay"/],
    [
      'maxRetriesPerRequest string',
      { maxRetriesPerRequest: '1' },
      TypeError,
      /option "maxRetriesPerRequest".*got "1"/,
    ],
    [
      'maxRetriesPerRequest fraction',
      { maxRetriesPerRequest: 1.5 },
      RangeError,
      /option "maxRetriesPerRequest"/,
    ],
    ['keyPrefix number', { keyPrefix: 5 }, TypeError, /option "keyPrefix" must be a string/],
    // On a Cluster, every key would take the prefix's hash tag: one slot for the whole kit.
    [
      'keyPrefix with braces on a Cluster',
      { keyPrefix: '{shop}:', cluster: { nodes: ['127.0.0.1:1'] } },
      TypeError,
      /option "keyPrefix" must be a string without "\{"/,
    ],
    ['disconnectTimeout -1', { disconnectTimeout: -1 }, RangeError, /option "disconnectTimeout"/],
    [
      'cluster.options.keyPrefix with braces',
      { cluster: { nodes: ['127.0.0.1:1'], options: { keyPrefix: '{shop}:' } } },
      TypeError,
      /option "cluster.options.keyPrefix" must be a string without "\{"/,
    ],
    ['url number', { url: 6379 }, TypeError, /option "url" must be a string/],
    ['cluster.nodes missing', { cluster: { node: ['127.0.0.1:1'] } }, TypeError, /option "cluster.node"/],
    [
      'sentinel.password',
      { sentinel: { sentinels: ['127.0.0.1:1'], name: 'm', password: 'x' } },
      TypeError,
      /option "sentinel.password"/,
    ],
  ])('refuses %s', (_name, options, kind, message) => {
    const error = thrown(() => createRedis({ lazyConnect: true, ...options } as never));
    expect(error).toBeInstanceOf(kind);
    expect(error.message).toMatch(message);
  });

  it('refuses two sources at once instead of letting one silently win', () => {
    expect(() => createRedis({ url: 'redis://127.0.0.1:1', cluster: { nodes: ['127.0.0.1:7000'] } })).toThrow(
      /option "url" and "cluster" cannot be combined\. Pass one of url, cluster or sentinel/,
    );
    expect(() =>
      createRedis({
        cluster: { nodes: ['127.0.0.1:7000'] },
        sentinel: { name: 'm', sentinels: [{ port: 1 }] },
      } as never),
    ).toThrow(TypeError);
  });

  it('refuses a wrong type before failFast starts a connection', () => {
    const error = thrown(() => createRedis({ failFast: 1 } as never));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toMatch(/option "failFast"/);
  });

  it('leaves ioredis options it does not read to ioredis, and takes null retries', () => {
    const client = createRedis({
      lazyConnect: true,
      maxRetriesPerRequest: null,
      enableAutoPipelining: false,
      commandTimeout: 250,
      connectionName: 'x',
    }) as Redis;
    try {
      expect(client.options.enableAutoPipelining).toBe(false);
      expect(client.options.maxRetriesPerRequest).toBeNull();
      expect(client.options.commandTimeout).toBe(250);
    } finally {
      client.disconnect();
    }
  });
});

describe('createRedis with valid options still connects', () => {
  const redis = useRedisServer();

  it('failFast: false returns a client, failFast: true a Promise of one', async () => {
    const plain = createRedis({ url: redis.server.url, failFast: false });
    expect(typeof (plain as unknown as Promise<unknown>).then).not.toBe('function');
    const checked = await createRedis({ url: redis.server.url, failFast: true });
    try {
      expect(await plain.ping()).toBe('PONG');
      expect(await checked.ping()).toBe('PONG');
    } finally {
      await closeRedis(plain);
      await closeRedis(checked);
    }
  });
});

describe('configureBreaker checks its options', () => {
  const client = createRedis({ lazyConnect: true });
  afterAll(() => client.disconnect());

  it.each<[string, object, typeof TypeError | typeof RangeError, RegExp]>([
    ['failureThreshold string', { failureThreshold: '5' }, TypeError, /option "failureThreshold".*got "5"/],
    ['failureThreshold zero', { failureThreshold: 0 }, RangeError, /option "failureThreshold"/],
    ['failureThreshold fraction', { failureThreshold: 1.5 }, RangeError, /option "failureThreshold"/],
    ['cooldownMs negative', { cooldownMs: -1 }, RangeError, /option "cooldownMs".*got -1/],
    ['cooldownMs string', { cooldownMs: '1000' }, TypeError, /option "cooldownMs"/],
    ['cooldownMs NaN', { cooldownMs: Number.NaN }, RangeError, /option "cooldownMs"/],
    [
      'an unknown name',
      { threshold: 3 },
      TypeError,
      /option "threshold" is not a configureBreaker option\. Use "failureThreshold"/,
    ],
    ['an array', [], TypeError, /option "options" of configureBreaker must be an object; got an empty array/],
    [
      'null',
      null as unknown as object,
      TypeError,
      /option "options" of configureBreaker must be an object.*E\.g\. \{ cooldownMs: 500 \}/,
    ],
  ])('refuses %s', (_name, options, kind, message) => {
    const error = thrown(() => configureBreaker(client, options as never));
    expect(error).toBeInstanceOf(kind);
    expect(error.message).toMatch(message);
  });

  it('still takes valid tuning', () => {
    expect(() => configureBreaker(client, { failureThreshold: 2, cooldownMs: 0 })).not.toThrow();
    expect(() => configureBreaker(client, {})).not.toThrow();
  });
});
