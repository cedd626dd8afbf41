import calculateSlot from 'cluster-key-slot';
import { Cluster } from 'ioredis';
import { breakerFor, CircuitBreaker, configureBreaker } from '../../lib/breaker';
import { RedisTimeoutError, RedisUnavailableError } from '../../lib/errors';
import { type KitEvent, onKitEvent } from '../../lib/events';
import { guarded } from '../../lib/guarded';
import { eventually, useRedisServer } from '../helpers/redis';

describe('circuit breaker', () => {
  it('opens after the failure threshold, fails fast during the cool-down, then lets one probe through', () => {
    const breaker = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 1000 });
    for (let i = 0; i < 3; i++) {
      expect(breaker.allow(0)).toBe(true);
      breaker.failure(0);
    }
    expect(breaker.currentState).toBe('open');
    expect(breaker.allow(500)).toBe(false);
    expect(breaker.allow(1000)).toBe(true);
    expect(breaker.allow(1000)).toBe(false);
    breaker.success();
    expect(breaker.currentState).toBe('closed');
    expect(breaker.allow(1001)).toBe(true);
  });

  it('re-opens when the probe fails', () => {
    const breaker = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 100 });
    breaker.failure(0);
    expect(breaker.allow(100)).toBe(true);
    breaker.failure(100);
    expect(breaker.currentState).toBe('open');
    expect(breaker.allow(150)).toBe(false);
  });
});

describe('per-node breakers of a Cluster client', () => {
  it('keeps an open breaker when the node map is full and has to forget nodes', () => {
    // No connection needed: breakerFor only reads the client's slot map, which is filled in here.
    const cluster = new Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true });
    const bySlot = new Map(Array.from({ length: 700 }, (_, i) => [calculateSlot(`{k${i}}`), `{k${i}}`]));
    const keys = [...bySlot.values()]; // one key per slot: a shared slot would remap an earlier key
    expect(keys.length).toBeGreaterThan(600);
    keys.forEach((key, i) => {
      cluster.slots[calculateSlot(key)] = [`10.0.${i >> 8}.${i & 255}:6379`];
    });
    const dead = breakerFor(cluster, keys[0]);
    for (let i = 0; i < dead.options.failureThreshold; i++) dead.failure();
    expect(dead.currentState).toBe('open');
    for (const key of keys.slice(1)) breakerFor(cluster, key);
    expect(breakerFor(cluster, keys[0])).toBe(dead);
    expect(breakerFor(cluster, keys[0]).allow()).toBe(false);
    cluster.disconnect();
  });
});

describe('guarded Redis calls', () => {
  const redis = useRedisServer();

  it('rejects with RedisTimeoutError when Redis is slower than the budget, without waiting longer', async () => {
    const client = redis.plain();
    await client.ping();
    await redis.plain().call('CLIENT', 'PAUSE', '1000', 'ALL');
    const started = Date.now();
    await expect(
      guarded(client, () => client.get('x'), { timeoutMs: 100, component: 'cache' }),
    ).rejects.toBeInstanceOf(RedisTimeoutError);
    expect(Date.now() - started).toBeLessThan(800);
  });

  it('fails fast once the breaker is open, and closes again when Redis answers', async () => {
    const client = redis.plain();
    await client.ping();
    configureBreaker(client, { failureThreshold: 2, cooldownMs: 300 });
    const events: KitEvent[] = [];
    const off = onKitEvent((e) => events.push(e));
    try {
      await redis.plain().call('CLIENT', 'PAUSE', '1500', 'ALL');
      for (let i = 0; i < 2; i++) {
        await expect(
          guarded(client, () => client.get('x'), { timeoutMs: 50, component: 'cache' }),
        ).rejects.toThrow();
      }
      // Judged once the calls still have no reply past the client's commandTimeout (none here: 1 s).
      await eventually(() => breakerFor(client).currentState === 'open', 'the breaker open', 3000);
      const started = Date.now();
      await expect(
        guarded(client, () => client.get('x'), { timeoutMs: 5000, component: 'cache' }),
      ).rejects.toThrow(/circuit breaker is open/);
      expect(Date.now() - started).toBeLessThan(50);
      await new Promise((r) => setTimeout(r, 700));
      expect(
        await guarded(client, () => client.get('x'), { timeoutMs: 1000, component: 'cache' }),
      ).toBeNull();
      expect(breakerFor(client).currentState).toBe('closed');
      expect(events.map((e) => e.type)).toEqual(
        expect.arrayContaining(['redis-call', 'redis-error', 'breaker-open', 'breaker-closed']),
      );
    } finally {
      off();
    }
  });

  it("stays closed for a Redis slower than one caller's budget but answering: the late replies count as answers", async () => {
    const client = redis.plain();
    await client.ping();
    configureBreaker(client, { failureThreshold: 2, cooldownMs: 300 });
    // Every reply comes ~300 ms late: too slow for a 50 ms budget, fine for a 1 s one.
    await redis.plain().call('CLIENT', 'PAUSE', '300', 'ALL');
    const late = [0, 1, 2].map(() =>
      guarded(client, () => client.get('x'), { timeoutMs: 50, component: 'rate-limit' }).catch(
        (e: Error) => e,
      ),
    );
    for (const outcome of await Promise.all(late)) expect(outcome).toBeInstanceOf(RedisTimeoutError);
    await new Promise((r) => setTimeout(r, 400));
    expect(breakerFor(client).currentState).toBe('closed');
    expect(
      await guarded(client, () => client.get('x'), { timeoutMs: 1000, component: 'session' }),
    ).toBeNull();
  });

  it('treats a full Redis (OOM) as unavailable, so the middlewares apply their fail mode', async () => {
    const client = redis.plain();
    const admin = redis.plain();
    await admin.config('SET', 'maxmemory', '1');
    try {
      const error = await guarded(client, () => client.set('k', 'v'), {
        timeoutMs: 500,
        component: 'cache',
      }).catch((e) => e);
      expect(error).toBeInstanceOf(RedisUnavailableError);
      expect(String(error.message)).toMatch(/OOM/);
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
  });

  it('passes an error the operation throws before sending through, without tripping the breaker', async () => {
    const client = redis.plain();
    configureBreaker(client, { failureThreshold: 1, cooldownMs: 10_000 });
    const error = await guarded(client, () => client.set('k', JSON.stringify({ n: 1n })), {
      timeoutMs: 500,
      component: 'session',
    }).catch((e) => e);
    expect(error).toBeInstanceOf(TypeError);
    expect(error).not.toBeInstanceOf(RedisUnavailableError);
    expect(breakerFor(client).currentState).toBe('closed');
  });

  it('frees the half-open probe when that probe throws before sending, so healthy calls go through again', async () => {
    const client = redis.plain();
    configureBreaker(client, { failureThreshold: 1, cooldownMs: 50 });
    breakerFor(client).failure();
    expect(breakerFor(client).currentState).toBe('open');
    await new Promise((r) => setTimeout(r, 60));
    // The probe never reaches Redis: it tells nothing, but must not hold the breaker half-open.
    const thrown = await guarded(client, () => client.set('k', JSON.stringify({ n: 1n })), {
      timeoutMs: 500,
      component: 'session',
    }).catch((e) => e);
    expect(thrown).toBeInstanceOf(TypeError);
    expect(await guarded(client, () => client.ping(), { timeoutMs: 500, component: 'session' })).toBe('PONG');
    expect(breakerFor(client).currentState).toBe('closed');
  });

  it('treats a programming error from an async operation as neither outage nor answer', async () => {
    const client = redis.plain();
    configureBreaker(client, { failureThreshold: 1, cooldownMs: 10_000 });
    const error = await guarded(
      client,
      async () => {
        throw new TypeError('the serializer refused the value');
      },
      { timeoutMs: 500, component: 'cache' },
    ).catch((e) => e);
    expect(error).toBeInstanceOf(TypeError);
    expect(error).not.toBeInstanceOf(RedisUnavailableError);
    expect(breakerFor(client).currentState).toBe('closed');
  });
});
