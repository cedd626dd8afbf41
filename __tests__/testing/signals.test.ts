import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { findRedisServer, RedisServerNotFoundError, startRedisServer } from '../../lib/testing';

const root = resolve(__dirname, '../..');

/**
 * A test process of its own: starts one redis-server through the helper, prints its pid, then idles
 * until a signal arrives. With `appListener`, the app has its own handler for the signal, which
 * logs, "drains" for 500 ms and exits 0, as a server shutting down gracefully would.
 */
function script(appListener: NodeJS.Signals | undefined): string {
  return `
import { startRedisServer } from ${JSON.stringify(join(root, 'lib/testing/index.ts'))};
${appListener ? `process.on(${JSON.stringify(appListener)}, () => { console.log('app-handler'); setTimeout(() => process.exit(0), 500); });` : ''}
(async () => {
  const server = await startRedisServer();
  console.log('started ' + JSON.stringify({ pid: server.pid, port: server.port }));
  setInterval(() => {}, 1000);
})().catch((error) => {
  console.error(error);
  process.exit(2);
});
`;
}

interface Child {
  proc: ChildProcess;
  serverPid: number;
  output: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'erk-signals-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const children: ChildProcess[] = [];
const serverPids: number[] = [];
afterEach(() => {
  // A failed assertion must not leave processes behind.
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const pid of serverPids.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone, as it should be.
    }
  }
});

function startChild(name: string, appListener?: NodeJS.Signals): Promise<Child> {
  const file = join(dir, `${name}.ts`);
  writeFileSync(file, script(appListener));
  // tsx as a loader, not its CLI: the CLI runs the script in a second process and relays signals,
  // so the process under test would not be the one the signal reaches.
  const proc = spawn(process.execPath, ['--import', 'tsx', file], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  let out = '';
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.once('exit', (code, signal) => r({ code, signal })),
  );
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`child did not start a server:\n${out}`)), 10_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const match = out.match(/started (\{.*\})/);
      if (match) {
        clearTimeout(timer);
        const serverPid = (JSON.parse(match[1]!) as { pid: number }).pid;
        serverPids.push(serverPid);
        resolvePromise({ proc, serverPid, output: () => out, exit });
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    exit.then(() => reject(new Error(`child exited early:\n${out}`)));
  });
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // A killed server whose parent died is a zombie until init reaps it: dead all the same.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

async function gone(pid: number, timeoutMs = 3000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isRunning(pid)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return !isRunning(pid);
}

describe('servers started by the testing helpers die with their test process', () => {
  it.each<NodeJS.Signals>(['SIGTERM', 'SIGINT'])(
    'on %s: kills the redis-server, and the process still dies by that signal',
    async (signal) => {
      const child = await startChild(signal.toLowerCase());
      expect(isRunning(child.serverPid)).toBe(true);
      child.proc.kill(signal);
      const { signal: died } = await child.exit;
      expect(died).toBe(signal);
      expect(await gone(child.serverPid)).toBe(true);
    },
    15_000,
  );

  it('leaves a signal the app handles to the app: the server keeps running while it drains, and dies at its exit', async () => {
    const child = await startChild('app-listener', 'SIGTERM');
    child.proc.kill('SIGTERM');
    const deadline = Date.now() + 3000;
    while (!child.output().includes('app-handler') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(child.output()).toContain('app-handler');
    // Mid-drain: the app may still need Redis.
    expect(isRunning(child.serverPid)).toBe(true);
    expect(await child.exit).toEqual({ code: 0, signal: null });
    expect(await gone(child.serverPid)).toBe(true);
  }, 15_000);

  it('listens for the signals only while a server runs', async () => {
    const before = ['SIGINT', 'SIGTERM', 'SIGHUP'].map((s) => process.listenerCount(s));
    const server = await startRedisServer();
    try {
      const during = ['SIGINT', 'SIGTERM', 'SIGHUP'].map((s) => process.listenerCount(s));
      expect(during).toEqual(before.map((n) => n + 1));
    } finally {
      await server.stop();
    }
    expect(['SIGINT', 'SIGTERM', 'SIGHUP'].map((s) => process.listenerCount(s))).toEqual(before);
  });
});

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
