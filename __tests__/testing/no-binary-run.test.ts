import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

const root = resolve(__dirname, '../..');

// `npm test` on a machine without redis-server: one line saying what to install, not the same
// failure and stack trace from nearly every test.
describe('the test run without a redis-server binary', () => {
  it('stops before any test with the install hint, once', async () => {
    const child = spawn(
      process.execPath,
      [
        resolve(root, 'node_modules/jest/bin/jest.js'),
        '--maxWorkers=1',
        '__tests__/validation/types.test.ts',
      ],
      {
        cwd: root,
        env: { ...process.env, REDIS_SERVER_BIN: '/nonexistent/redis-server' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    child.stderr!.on('data', (c) => (out += c));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code).toBe(1);
    expect(out.match(/no redis-server binary found/g)).toHaveLength(1);
    expect(out).toMatch(/apt-get install -y redis-server/);
    expect(out).not.toMatch(/PASS|FAIL/);
  }, 60_000);
});
