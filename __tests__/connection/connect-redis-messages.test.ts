import { closeRedis, connectRedis } from '../../lib/connection';
import { type RedisServerHandle, startRedisServer } from '../../lib/testing';

describe('connectRedis (failFast) messages and timing', () => {
  let server: RedisServerHandle;
  beforeAll(async () => {
    server = await startRedisServer({
      args: ['--user', 'limited', 'on', '>pw', '-@all', '+hello', '+info', '+auth'],
    });
  });
  afterAll(async () => {
    await server.stop();
  });

  it('failFast with lazyConnect: true resolves quickly on a healthy server (no 3 s wait for a ready that never comes)', async () => {
    const started = Date.now();
    const c = await connectRedis({ url: server.url, lazyConnect: true, logger: false } as never);
    const took = Date.now() - started;
    await closeRedis(c, { timeoutMs: 200 });
    expect(took).toBeLessThan(1000);
  });

  it('the rejection names the current failure, not a stale connect error from an earlier attempt', async () => {
    await server.kill();
    const restart = new Promise<void>((r) => setTimeout(() => void server.restart().then(r), 400));
    const error = await connectRedis({
      url: `redis://limited:pw@127.0.0.1:${server.port}`,
      logger: false,
      connectTimeout: 6000,
    }).then(
      async (c) => {
        await closeRedis(c);
        return undefined;
      },
      (e: Error) => e,
    );
    await restart;
    expect(error?.message).not.toMatch(/ECONNREFUSED/);
    expect(error?.message).toMatch(/NOPERM/);
  }, 20_000);

  it('wrong password (standalone): message says so, without "Start redis-server"', async () => {
    const error = await connectRedis({
      url: `redis://limited:bad@127.0.0.1:${server.port}`,
      logger: false,
    }).then(
      async (c) => {
        await closeRedis(c);
        return undefined;
      },
      (e: Error) => e,
    );
    expect(error?.message).toMatch(/WRONGPASS/);
    expect(error?.message).not.toMatch(/Start redis-server/);
  }, 20_000);

  it('unreachable standalone: message', async () => {
    const error = await connectRedis({ url: `redis://127.0.0.1:1`, logger: false }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).toMatch(/ECONNREFUSED.*Start redis-server/);
  }, 20_000);
});
