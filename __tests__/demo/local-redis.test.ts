import type { Server } from 'node:net';
import { probeLocal } from '../../demo-app/redis';
import { type RedisServerHandle, startRedisServer } from '../../lib/testing';
import { fakeServer, httpService, loadingRedis } from '../helpers/fake-servers';

// The demo uses a Redis already on 6379 when one answers; what it says when something there answers
// but is passed over (two demo processes then no longer share sessions and the live feed through
// it). Probed here on other ports, with what really listens in each case.

const servers: RedisServerHandle[] = [];
const fakes: Server[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  for (const fake of fakes) fake.close();
});

async function fake(handler: Parameters<typeof fakeServer>[0]): Promise<string> {
  const { server, address } = await fakeServer(handler);
  fakes.push(server);
  return address;
}

async function redis(options: Parameters<typeof startRedisServer>[0] = {}): Promise<string> {
  const server = await startRedisServer(options);
  servers.push(server);
  return `127.0.0.1:${server.port}`;
}

const probe = (where: string) => probeLocal(`redis://${where}`);

describe('the demo probing a Redis of its own on 6379', () => {
  it('uses a Redis that answers; says nothing when nothing listens, or something accepts and closes', async () => {
    expect(await probe(await redis())).toEqual({ ok: true });
    expect(await probe('127.0.0.1:1')).toEqual({ ok: false, why: undefined });
    expect(await probe(await fake((s) => s.destroy()))).toEqual({ ok: false, why: undefined });
  });

  it('names a password Redis, with the REDIS_URL that uses it', async () => {
    const where = await redis({ password: 'pw' });
    expect((await probe(where)).why).toMatch(
      new RegExp(
        `^The Redis on ${where} needs a password \\(NOAUTH.*\\); to use it, set REDIS_URL=redis://:PASSWORD@${where}\\.$`,
      ),
    );
  });

  it('names a replica, pointing at its master', async () => {
    const master = await redis();
    const where = await redis({ args: ['--replicaof', '127.0.0.1', master.split(':')[1]!] });
    expect((await probe(where)).why).toBe(
      `The Redis on ${where} is a replica; to use its master, set REDIS_URL to it.`,
    );
  });

  it('names another service (HTTP) as not a Redis server', async () => {
    const where = await fake(httpService);
    expect((await probe(where)).why).toBe(
      `What listens on ${where} is not a Redis server (another service on that port?).`,
    );
  });

  it('a Redis still loading its dataset (or a silent listener): accepted, but not a ready Redis', async () => {
    const loading = await fake(loadingRedis);
    const silent = await fake(() => {});
    for (const where of [loading, silent]) {
      expect((await probe(where)).why).toBe(
        `Something on ${where} accepted the connection but did not answer as a ready Redis (one still loading its dataset?).`,
      );
    }
  });
});
