import express from 'express';
import { cacheResponse, withLock } from '../../lib/cache';
import { captureEvents } from '../helpers/events';
import { useRedisServer } from '../helpers/redis';
import { useTcpProxy } from '../helpers/tcp-proxy';
import { listen, quietLogger } from './helpers';

// ioredis sends a command again when the connection dropped before its reply: a lock command that
// had landed then finds the lock holding its own token, and must count it as taken, not as busy.

const redis = useRedisServer();
const proxy = useTcpProxy(() => redis.server.port);
const stops: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** Drops the connection after the first command sent while armed that `matches` (its reply is lost). */
async function lossyClient(matches: (chunk: string) => boolean) {
  const state = { armed: false, dropped: 0 };
  const client = await proxy({
    dropAfter: (chunk) => {
      if (!state.armed || state.dropped > 0 || !matches(chunk)) return false;
      state.dropped++;
      return true;
    },
  });
  return { client, state };
}

describe('cache locks over a lossy network', () => {
  it('a miss whose lookup took the fill lock but lost the reply fills at once, not after lockTimeout', async () => {
    const { client, state } = await lossyClient((chunk) => /evalsha/i.test(chunk));
    let calls = 0;
    const app = express();
    app.get(
      '/:page',
      cacheResponse({
        redis: client,
        ttl: '1m',
        l1: false,
        timeout: 2000,
        lockTimeout: '10s',
        logger: quietLogger(),
      }),
      (req, res) => {
        calls++;
        res.send(`page ${req.params.page}`);
      },
    );
    const http = await listen(app);
    stops.push(http.close);
    const events = captureEvents('cache');
    stops.push(events.stop);
    await fetch(`${http.url}/warm`); // loads the scripts, so the next lookup is one EVALSHA
    await events.waitFor('store', 1);
    state.armed = true;
    const started = Date.now();
    const res = await fetch(`${http.url}/r`);
    expect(await res.text()).toBe('page r');
    expect(state.dropped).toBe(1);
    expect(res.headers.get('x-cache')).toBe('MISS');
    expect(Date.now() - started).toBeLessThan(2000);
    expect(calls).toBe(2);
    expect(events.events.filter((e) => e.type === 'lock-wait')).toEqual([]);
  });

  it('withLock whose SET landed but lost its reply runs fn instead of waiting for its own lock', async () => {
    // The first command naming the lock is the one that takes it.
    const { client, state } = await lossyClient((chunk) => chunk.includes('{job}'));
    await withLock(client, 'warm', () => 'loads the scripts');
    state.armed = true;
    const ran = await withLock(client, 'job', () => 'ran', { ttl: '10s', wait: '1s', timeout: 2000 });
    expect(ran).toBe('ran');
    expect(state.dropped).toBe(1);
  });
});
