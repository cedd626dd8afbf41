import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import { findRedisServer, RedisServerNotFoundError, startRedisServer } from '../../lib/testing';

describe('startRedisServer', () => {
  it('starts a throwaway server on a free loopback port that answers commands, and stops it', async () => {
    const server = await startRedisServer();
    const client = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
      await client.connect();
      await client.set('k', 'v');
      expect(await client.get('k')).toBe('v');
      // No persistence: a test server never writes an RDB file into the repo or the temp dir.
      expect(await client.config('GET', 'save')).toEqual(['save', '']);
    } finally {
      client.disconnect();
      await server.stop();
    }
    expect(server.pid).toBeUndefined();
  });

  it('kill() makes the server unreachable and restart() brings it back on the same port, empty', async () => {
    const server = await startRedisServer();
    const client = new Redis(server.url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => 20,
    });
    try {
      await client.connect();
      await client.set('k', 'v');
      await server.kill();
      await expect(client.get('k')).rejects.toThrow();
      const port = server.port;
      await server.restart();
      expect(server.port).toBe(port);
      await new Promise<void>((resolve) =>
        client.status === 'ready' ? resolve() : client.once('ready', () => resolve()),
      );
      expect(await client.get('k')).toBeNull();
    } finally {
      client.disconnect();
      await server.stop();
    }
  });

  it('sets a password when asked, and the url carries it', async () => {
    const server = await startRedisServer({ password: 's3cret' });
    expect(server.url).toBe(`redis://:s3cret@127.0.0.1:${server.port}`);
    const anonymous = new Redis(server.port, '127.0.0.1', {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      protocol: 2,
    });
    anonymous.on('error', () => {});
    const authed = new Redis(server.url, { lazyConnect: true });
    try {
      await authed.connect();
      expect(await authed.ping()).toBe('PONG');
      await anonymous.connect().catch(() => {});
      await expect(anonymous.get('x')).rejects.toThrow(/NOAUTH/);
    } finally {
      anonymous.disconnect();
      authed.disconnect();
      await server.stop();
    }
  });

  it('names the install commands when the binary is missing', () => {
    let error: unknown;
    try {
      findRedisServer('/nonexistent/redis-server');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(RedisServerNotFoundError);
    expect((error as Error).message).toMatch(/apt-get install -y redis-server/);
    expect((error as Error).message).toMatch(/brew install redis/);
    // Not REDIS_URL: a test's throwaway server does not read it (the demo adds that hint itself).
    expect((error as Error).message).not.toMatch(/REDIS_URL/);
  });

  it('finds the binary on PATH when REDIS_SERVER_BIN is not set', () => {
    expect(findRedisServer()).toMatch(/redis-server$/);
  });

  it('refuses a directory as the binary (it passes an X_OK check) instead of crashing on spawn', () => {
    expect(() => findRedisServer('/usr/bin')).toThrow(RedisServerNotFoundError);
  });

  it('never takes another redis-server on the port for its own: start and restart reject instead', async () => {
    const owner = await startRedisServer();
    const other = new Redis(owner.url);
    let squatter: Awaited<ReturnType<typeof startRedisServer>> | undefined;
    const mine = await startRedisServer();
    try {
      await other.set('owner', 'first');
      await expect(startRedisServer({ port: owner.port })).rejects.toThrow(/Address already in use/);
      // Its data is untouched, and nobody else answers for it.
      expect(await other.get('owner')).toBe('first');
      // A server killed for a fault test whose port another one took meanwhile.
      const port = mine.port;
      await mine.kill();
      squatter = await startRedisServer({ port });
      await expect(mine.restart()).rejects.toThrow(/Address already in use/);
    } finally {
      other.disconnect();
      await Promise.all([owner.stop(), mine.stop(), squatter?.stop()]);
    }
  });

  it('does not take a password-protected redis-server on the port for its own either', async () => {
    const owner = await startRedisServer({ password: 'theirs' });
    try {
      await expect(startRedisServer({ port: owner.port })).rejects.toThrow(/Address already in use/);
      await expect(startRedisServer({ port: owner.port, args: ['--requirepass', 'mine'] })).rejects.toThrow(
        /Address already in use/,
      );
    } finally {
      await owner.stop();
    }
  });

  it('does not retry a start that failed for a bad argument (only one whose port was taken)', async () => {
    // A wrapper that counts its launches, then becomes the real redis-server (same pid).
    const dir = mkdtempSync(join(tmpdir(), 'erk-launches-'));
    const binary = join(dir, 'redis-server');
    writeFileSync(binary, `#!/bin/sh\necho launch >> "${dir}/count"\nexec "${findRedisServer()}" "$@"\n`);
    chmodSync(binary, 0o755);
    try {
      await expect(startRedisServer({ binary, args: ['--no-such-option', 'x'] })).rejects.toThrow(
        /FATAL CONFIG/,
      );
      expect(readFileSync(join(dir, 'count'), 'utf8').trim().split('\n')).toHaveLength(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
