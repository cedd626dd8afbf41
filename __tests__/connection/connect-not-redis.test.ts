import { connectRedis } from '../../lib/connection';
import { type RedisServerHandle, startRedisServer } from '../../lib/testing';
import { fakeServer, httpService, loadingRedis } from '../helpers/fake-servers';

// What answers at the address is not (yet) a usable Redis: the rejection says what it is, not
// "Start redis-server", which sends the user looking for a server that is running.

async function fake(handler: Parameters<typeof fakeServer>[0]) {
  const { server, address } = await fakeServer(handler);
  return { server, url: `redis://${address}` };
}

describe('connectRedis against something that is not a ready Redis', () => {
  it('a service that does not speak the Redis protocol (an HTTP server) is named as such', async () => {
    const { server, url } = await fake(httpService);
    try {
      const error = await connectRedis({ url, logger: false }).catch((e: Error) => e);
      expect(String(error)).toMatch(/does not speak the Redis protocol: check the host and port/);
      expect(String(error)).not.toMatch(/Start redis-server/);
    } finally {
      server.close();
    }
  });

  it('a silent listener (accepts, never answers), with default options, is not sent to start redis-server', async () => {
    const { server, url } = await fake(() => {});
    try {
      const error = await connectRedis({ url, logger: false }).catch((e: Error) => e);
      expect(String(error)).toMatch(/accepted the connection but never became ready: Command timed out/);
    } finally {
      server.close();
    }
  }, 15_000);

  it('a Redis still loading its dataset (INFO says loading:1) is named as not ready, with loading as the likely reason', async () => {
    const { server, url } = await fake(loadingRedis);
    try {
      const error = await connectRedis({ url, logger: false }).catch((e: Error) => e);
      expect(String(error)).toMatch(/accepted the connection but never became ready/);
      expect(String(error)).toMatch(/still loading its dataset/);
      expect(String(error)).not.toMatch(/Start redis-server/);
    } finally {
      server.close();
    }
  }, 15_000);
});

describe('connectRedis with a TLS setting that does not match the server', () => {
  let server: RedisServerHandle;
  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    await server.stop();
  });

  it('rediss:// to a plain Redis names the scheme and TLS options, not "Start redis-server"', async () => {
    const url = server.url.replace(/^redis:/, 'rediss:');
    const error = await connectRedis({ url, logger: false }).catch((e: Error) => e);
    expect(String(error)).toMatch(
      /Check the scheme against the server \(rediss:\/\/ for TLS, redis:\/\/ without\)/,
    );
    expect(String(error)).not.toMatch(/Start redis-server/);
  }, 15_000);
});
