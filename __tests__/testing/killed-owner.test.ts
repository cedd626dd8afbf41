import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(__dirname, '../..');

/** A test process of its own: starts one redis-server through the helper, prints its pid, idles. */
const SCRIPT = `
import { startRedisServer } from ${JSON.stringify(join(root, 'lib/testing/index.ts'))};
(async () => {
  const server = await startRedisServer({ binary: process.env.ERK_TEST_BINARY || undefined });
  const pid = server.pid;
  if (process.env.ERK_TEST_KILL) {
    const dir = require('node:fs').readlinkSync('/proc/' + server.pid + '/cwd');
    await server.kill();
    console.log('killed ' + dir);
  }
  console.log('started ' + pid);
  // A forgotten stop(): the process exits normally, its exit hook runs.
  process.on('SIGUSR2', () => process.exit(0));
  setInterval(() => {}, 1000);
})().catch((error) => {
  console.error(error);
  process.exit(2);
});
`;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'erk-owner-'));
  writeFileSync(join(dir, 'owner.ts'), SCRIPT);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const leftovers: number[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const pid of leftovers.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone, as it should be.
    }
  }
});

function startOwner(
  binary = '',
  killFirst = false,
): Promise<{ child: ChildProcess; serverPid: number; out: () => string }> {
  // tsx as a loader, not its CLI: the CLI would run the script in a second process.
  const child = spawn(process.execPath, ['--import', 'tsx', join(dir, 'owner.ts')], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ERK_TEST_BINARY: binary, ERK_TEST_KILL: killFirst ? '1' : '' },
  });
  children.push(child);
  let out = '';
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`no server started:\n${out}`)), 10_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const match = out.match(/started (\d+)/);
      if (match) {
        clearTimeout(timer);
        const serverPid = Number(match[1]);
        leftovers.push(serverPid);
        resolvePromise({ child, serverPid, out: () => out });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
  });
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // Killed but not yet reaped (its parent died first): a zombie is gone all the same.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/** The live processes whose parent is `pid` (Linux). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

async function goneWithin(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!running(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !running(pid);
}

describe('servers of a test process that is killed', () => {
  it.each<NodeJS.Signals>(['SIGKILL', 'SIGINT', 'SIGTERM'])(
    'are stopped shortly after the process dies by %s, which skips its exit handlers',
    async (signal) => {
      const { child, serverPid } = await startOwner();
      expect(running(serverPid)).toBe(true);
      child.kill(signal);
      expect(await goneWithin(serverPid, 5000)).toBe(true);
    },
    20_000,
  );

  it('have their temp dir removed also when the server was killed first and never stopped', async () => {
    const { child, out } = await startOwner('', true);
    const dir = /killed (\S+)/.exec(out())![1]!;
    expect(existsSync(dir)).toBe(true);
    child.kill('SIGKILL');
    const deadline = Date.now() + 5000;
    while (existsSync(dir) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(dir)).toBe(false);
  }, 20_000);

  it.each(['SIGKILL', 'exit'] as const)(
    'are stopped when their binary is a launcher script running redis-server without exec (owner ends by %s)',
    async (end) => {
      const { findRedisServer } = await import('../../lib/testing');
      const launcher = join(dir, 'launch-redis');
      writeFileSync(launcher, `#!/bin/sh\n${findRedisServer()} "$@"\n`);
      chmodSync(launcher, 0o755);
      const { child, serverPid: launcherPid } = await startOwner(launcher);
      const real = childrenOf(launcherPid)[0]!;
      expect(real).toBeGreaterThan(0);
      leftovers.push(real);
      // 'exit': the owner's own exit hook (a forgotten stop()); SIGKILL: the watchdog.
      child.kill(end === 'exit' ? 'SIGUSR2' : 'SIGKILL');
      expect(await goneWithin(real, 5000)).toBe(true);
    },
    20_000,
  );

  it('are stopped whatever their binary is called (a valkey-server, a renamed build)', async () => {
    const { findRedisServer } = await import('../../lib/testing');
    const renamed = join(dir, 'my-kv-server');
    symlinkSync(findRedisServer(), renamed);
    const { child, serverPid } = await startOwner(renamed);
    expect(readFileSync(`/proc/${serverPid}/cmdline`, 'utf8')).not.toContain('redis-server');
    child.kill('SIGKILL');
    expect(await goneWithin(serverPid, 5000)).toBe(true);
  }, 20_000);
});

describe('reapOrphanedServers (the jest global teardown)', () => {
  it('kills a server whose owner is gone and leaves one whose owner lives', async () => {
    const { findRedisServer, freePort } = await import('../../lib/testing');
    const { PID_DIR, reapOrphanedServers } = await import('../../lib/testing/cleanup');
    const { mkdirSync } = await import('node:fs');
    const start = async () => {
      const server = spawn(findRedisServer(), ['--port', String(await freePort()), '--save', ''], {
        stdio: 'ignore',
      });
      children.push(server);
      leftovers.push(server.pid!);
      return server.pid!;
    };
    // A pid that surely names no live process: one that just exited.
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((r) => dead.once('exit', r));
    const orphan = await start();
    const owned = await start();
    mkdirSync(PID_DIR, { recursive: true });
    writeFileSync(join(PID_DIR, String(orphan)), String(dead.pid));
    writeFileSync(join(PID_DIR, String(owned)), String(process.pid));
    try {
      reapOrphanedServers();
      expect(await goneWithin(orphan, 3000)).toBe(true);
      expect(running(owned)).toBe(true);
    } finally {
      rmSync(join(PID_DIR, String(owned)), { force: true });
    }
  });
});
