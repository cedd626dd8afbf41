import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { findRedisServer, RedisServerNotFoundError, startRedisServer } from '../../lib/testing';

describe('the binary option', () => {
  const previous = process.env.REDIS_SERVER_BIN;
  afterEach(() => {
    if (previous === undefined) delete process.env.REDIS_SERVER_BIN;
    else process.env.REDIS_SERVER_BIN = previous;
  });

  it('names the binary option, not REDIS_SERVER_BIN, when the path came from the option', async () => {
    delete process.env.REDIS_SERVER_BIN;
    const error = await startRedisServer({ binary: '/nonexistent/redis-server' }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(error).toBeInstanceOf(RedisServerNotFoundError);
    expect(error!.message).toMatch(
      /option "binary" \(\/nonexistent\/redis-server\) is not an executable file/,
    );
    expect(error!.message).not.toMatch(/REDIS_SERVER_BIN=/);
  });

  it('still names REDIS_SERVER_BIN when the path came from it', () => {
    process.env.REDIS_SERVER_BIN = '/nonexistent/from-env';
    expect(() => findRedisServer()).toThrow(
      /REDIS_SERVER_BIN=\/nonexistent\/from-env is not an executable file/,
    );
  });
});

describe('a TMPDIR the throwaway server cannot use', () => {
  it('is named, with the fix, instead of a bare ENOTDIR', async () => {
    // A process of its own: the temp dir comes from the real environment, which jest's copy of it
    // does not reach. tsx keeps a cache in TMPDIR too: off.
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '-e',
        "require('./lib/testing').startRedisServer().then((s) => s.stop(), (e) => { console.error(e.message); process.exit(3); })",
      ],
      {
        cwd: resolve(__dirname, '../..'),
        env: { ...process.env, TMPDIR: '/etc/hostname/not-a-dir', TSX_DISABLE_CACHE: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect({ code, out: out.trim() }).toEqual({
      code: 3,
      out: expect.stringMatching(
        /^express-redis-kit: cannot create the throwaway redis-server's directory in \/etc\/hostname\/not-a-dir \(ENOTDIR.*\)\. Set TMPDIR to a writable directory\.$/,
      ),
    });
  }, 30_000);
});
