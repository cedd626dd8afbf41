import { spawnSync } from 'node:child_process';
import { newToken } from '../../lib/token';

describe('owner tokens', () => {
  it('are unique within a process', () => {
    const tokens = new Set(Array.from({ length: 100_000 }, () => newToken()));
    expect(tokens.size).toBe(100_000);
  });

  it('are unique across processes, which each count from the start', () => {
    const script =
      "require('tsx/cjs'); const { newToken } = require('./lib/token.ts'); console.log(newToken());";
    const first = () => spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' }).stdout.trim();
    const [a, b] = [first(), first()];
    expect(a).not.toBe('');
    expect(a).not.toBe(b);
  });
});
