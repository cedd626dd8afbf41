import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findRedisServer } from './binary';

/** Options of {@link startRedisServer}. */
export interface RedisServerOptions {
  /** Port to listen on. Default: a free loopback port. */
  port?: number;
  /** Path of the redis-server binary. Default: `REDIS_SERVER_BIN`, else the PATH. */
  binary?: string;
  /** Sets `requirepass` (the `default` user's password). */
  password?: string;
  /** Extra `redis-server` arguments, e.g. `['--maxmemory', '10mb']`. */
  args?: string[];
  /** How long to wait for the first PONG. Default 10 s. */
  startTimeoutMs?: number;
}

/** A throwaway redis-server process. */
export interface RedisServerHandle {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** `redis://127.0.0.1:<port>` (with the password when one was set). */
  readonly url: string;
  readonly pid: number | undefined;
  /** Graceful stop (SIGTERM, SIGKILL after 3 s); removes the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL, for fault tests: clients see a dead server. The handle can `restart()` afterwards. */
  kill(): Promise<void>;
  /** Starts the server again on the same port (after `kill()`, or stops it first). */
  restart(): Promise<void>;
}

/**
 * Shared by every copy of this module in the process (a bundler or two package versions may load it
 * twice). Jest gives each test file its own `process` object, so there it is one per file, and its
 * exit hook never runs: the watchdog (one per process, found through its marker file) and the pid
 * files' `.dir` twins clean up instead.
 */
interface ProcessState {
  live: Set<ChildProcess>;
  /** Temp dirs of servers not stopped yet: removed at exit too. */
  dirs: Set<string>;
  installed: boolean;
}
const STATE_KEY = Symbol.for('express-redis-kit.testing.servers');
const holder = process as unknown as Record<symbol, ProcessState | undefined>;
const state: ProcessState = holder[STATE_KEY] ?? { live: new Set(), dirs: new Set(), installed: false };
holder[STATE_KEY] = state;

/**
 * Where pid files of running test servers live, so a crashed run can be cleaned up: one directory
 * per user, so nobody else's files (or servers) come into it.
 */
export const PID_DIR = join(tmpdir(), `express-redis-kit-servers-${process.getuid?.() ?? 'user'}`);

function installExitHook(): void {
  if (state.installed) return;
  state.installed = true;
  process.once('exit', () => {
    for (const child of state.live) child.kill('SIGKILL');
    for (const dir of state.dirs) rmSync(dir, { recursive: true, force: true });
  });
  startWatchdog();
}

/**
 * Kills test servers whose owner process is gone, from their pid files. Plain JavaScript run by a
 * separate `node -e`, so it works where the owner cannot act: as a watchdog (argument: the owner's
 * pid) it waits for that owner to die, which skips 'exit' when killed by a signal (Ctrl-C, a CI
 * timeout, SIGKILL), then kills its servers; without an owner it reaps every orphan at once.
 */
const REAPER = `
const fs = require('node:fs');
const path = require('node:path');
const [dir, ownerArg] = process.argv.slice(1);
// Only a directory of this user's: anyone could plant pid files in another.
try { if (process.getuid && fs.statSync(dir).uid !== process.getuid()) process.exit(0); } catch {}
const alive = (pid) => {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try { process.kill(pid, 0); return true; } catch (error) { return error.code === 'EPERM'; }
};
// Only a redis-server: the pid may have been reused since the file was written.
const isRedis = (pid) => {
  try {
    if (process.platform === 'linux') return fs.readFileSync('/proc/' + pid + '/cmdline', 'utf8').includes('redis-server');
    return require('node:child_process').execFileSync('ps', ['-o', 'command=', '-p', String(pid)], { encoding: 'utf8' }).includes('redis-server');
  } catch { return false; }
};
const tmp = require('node:os').tmpdir();
const reap = (ownedByTheDead) => {
  let entries = [];
  try { entries = fs.readdirSync(dir); } catch {}
  for (const entry of entries) {
    if (entry.endsWith('.dir')) continue;
    const file = path.join(dir, entry);
    let recorded = '';
    try { recorded = fs.readFileSync(file, 'utf8'); } catch { continue; }
    if (!ownedByTheDead(Number(recorded))) continue;
    const pid = Number(entry);
    if (Number.isInteger(pid) && pid > 0 && isRedis(pid)) { try { process.kill(pid, 'SIGKILL'); } catch {} }
    try { fs.unlinkSync(file); } catch {}
    // The server's temp dir, when it is one of ours.
    try {
      const serverDir = fs.readFileSync(file + '.dir', 'utf8');
      if (path.dirname(serverDir) === tmp && path.basename(serverDir).startsWith('erk-redis-')) fs.rmSync(serverDir, { recursive: true, force: true });
      fs.unlinkSync(file + '.dir');
    } catch {}
  }
};
if (ownerArg) {
  const owner = Number(ownerArg);
  const timer = setInterval(() => {
    if (alive(owner)) return;
    clearInterval(timer);
    reap((recorded) => recorded === owner);
    try { fs.unlinkSync(path.join(dir, 'watchdog-' + owner)); } catch {}
  }, 500);
} else {
  reap((recorded) => !alive(recorded));
}
`;

/** Kills every test server left by a process that is gone (a crashed jest worker…). */
export function reapOrphanedServers(): void {
  spawnSync(process.execPath, ['-e', REAPER, PID_DIR], {
    stdio: 'ignore',
    env: { ...process.env, NODE_OPTIONS: '' },
  });
}

/** One per process: kills this process's servers once it is gone, however it died. */
function startWatchdog(): void {
  try {
    // Worker threads of one process share its watchdog, found by this file (their state is not shared).
    const marker = join(PID_DIR, `watchdog-${process.pid}`);
    if (!ownPidDir()) return;
    try {
      const running = Number(readFileSync(marker, 'utf8'));
      if (running > 0 && isOurWatchdog(running)) return;
    } catch {
      // None yet.
    }
    const watchdog = spawn(process.execPath, ['-e', REAPER, PID_DIR, String(process.pid)], {
      detached: true,
      stdio: 'ignore',
      // Plain Node is enough: not the loaders or flags (tsx, --inspect…) NODE_OPTIONS may carry.
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    watchdog.on('error', () => {});
    watchdog.unref();
    if (watchdog.pid) writeFileSync(marker, String(watchdog.pid));
  } catch {
    // Only a safety net for killed processes; never fail a start over it.
  }
}

/** Whether `pid` is this process's watchdog (pids are reused: a stale marker may name anything). */
function isOurWatchdog(pid: number): boolean {
  try {
    const command =
      process.platform === 'linux'
        ? readFileSync(`/proc/${pid}/cmdline`, 'utf8')
        : execFileSync('ps', ['-o', 'command=', '-p', String(pid)], { encoding: 'utf8' });
    return command.includes(PID_DIR) && command.includes(String(process.pid));
  } catch {
    return false;
  }
}

/** Creates the pid directory; false when it belongs to someone else (its files could name any process). */
function ownPidDir(): boolean {
  mkdirSync(PID_DIR, { recursive: true, mode: 0o700 });
  const uid = process.getuid?.();
  return uid === undefined || statSync(PID_DIR).uid === uid;
}

/** Asks the OS for a free loopback port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/**
 * Resolves once the redis-server with process id `pid` answers on the port (or rejects after
 * `timeoutMs`). Another server that already holds the port (ours then fails to bind and exits) does
 * not count: its data is someone else's.
 */
export async function waitForPing(
  port: number,
  timeoutMs: number,
  isAlive: () => boolean = () => true,
  expect: { pid?: number; password?: string } = {},
): Promise<void> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`redis-server on port ${port} exited during start-up`);
    const answer = await answersAs(port, expect);
    if (answer === 'ours') return;
    // Password-protected and its password unknown: who answers cannot be asked. One that failed to
    // bind (the port was someone else's) exits within milliseconds; still alive after that, it is ours.
    if (answer === 'locked' && (expect.pid === undefined || Date.now() - started > 1000)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms`);
}

const resp = (...args: string[]) =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/**
 * 'ours' when the server on `port` is up (PONG: "-LOADING" is not) and, when `pid` is given, is that
 * process; 'locked' when it wants a password not known here; else 'no'.
 */
function answersAs(
  port: number,
  expect: { pid?: number; password?: string },
): Promise<'ours' | 'locked' | 'no'> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let seen = '';
    const done = (answer: 'ours' | 'locked' | 'no') => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(500, () => done('no'));
    socket.on('error', () => done('no'));
    socket.on('connect', () =>
      socket.write(
        (expect.password ? resp('AUTH', expect.password) : '') + resp('INFO', 'server') + resp('PING'),
      ),
    );
    socket.on('data', (data) => {
      seen += data.toString();
      if (/^-NOAUTH/m.test(seen)) return done('locked');
      if (/^-(LOADING|ERR|WRONGPASS)/m.test(seen)) return done('no');
      const pid = /^process_id:(\d+)/m.exec(seen);
      if (pid && expect.pid !== undefined && Number(pid[1]) !== expect.pid) return done('no');
      if (pid && /^\+PONG/m.test(seen)) done('ours');
    });
  });
}

/**
 * Starts a throwaway redis-server on loopback: no persistence, temp dir, free port. Waits until it
 * answers PING. Throws a clear install hint when no binary is found.
 */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServerHandle> {
  const binary = findRedisServer(options.binary);
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'erk-redis-'));
  let port = options.port ?? (await freePort());
  let child: ChildProcess | undefined;
  let stopped = false;

  const launch = async (): Promise<void> => {
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--daemonize',
      'no',
      '--loglevel',
      'warning',
      '--logfile',
      '',
      ...(options.password ? ['--requirepass', options.password] : []),
      ...(options.args ?? []),
    ];
    // Its own process group: Ctrl-C in a terminal signals the whole foreground group, and the server
    // must outlive the owner's graceful shutdown (which closes it). If the owner dies instead, its
    // exit hook or the watchdog stops the server.
    const proc = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child = proc;
    let spawnError: Error | undefined;
    proc.once('error', (error) => {
      spawnError = error;
    });
    // Keep the tail of the server's own log, so a failed start says why (bad argument, port taken…).
    let log = '';
    const keep = (chunk: Buffer) => {
      log = (log + chunk.toString()).slice(-2000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    state.live.add(proc);
    writePid(proc.pid, dir);
    let exited = false;
    proc.once('exit', () => {
      exited = true;
      state.live.delete(proc);
      removePid(proc.pid);
    });
    try {
      await waitForPing(port, options.startTimeoutMs ?? 10_000, () => !exited && !spawnError, {
        pid: proc.pid,
        password: options.password ?? passwordIn(options.args),
      });
    } catch (error) {
      proc.kill('SIGKILL');
      if (spawnError) throw new Error(`cannot run ${binary}: ${spawnError.message}`);
      const inUse = /address already in use/i.test(log);
      throw Object.assign(
        new Error(`${(error as Error).message}${log ? `; its log ends:\n${log.trim()}` : ''}`),
        { portInUse: inUse },
      );
    }
    // Up: it must not keep the test process alive (a forgotten stop() is cleaned up at exit).
    proc.unref();
    for (const stream of [proc.stdout, proc.stderr]) (stream as { unref?: () => void } | null)?.unref?.();
  };

  state.dirs.add(dir);
  // A free port can be taken between the check and redis-server's bind: retry on a fresh one. Any
  // other failure (a bad argument, a timeout) would only fail again.
  for (let attempt = 0; ; attempt++) {
    try {
      await launch();
      break;
    } catch (error) {
      if (options.port !== undefined || attempt >= 4 || !(error as { portInUse?: boolean }).portInUse) {
        state.dirs.delete(dir);
        rmSync(dir, { recursive: true, force: true });
        throw error;
      }
      port = await freePort();
    }
  }

  const terminate = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  };

  const auth = options.password ? `:${encodeURIComponent(options.password)}@` : '';
  return {
    host: '127.0.0.1',
    get port() {
      return port;
    },
    get url() {
      return `redis://${auth}127.0.0.1:${port}`;
    },
    get pid() {
      return child?.pid;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await terminate('SIGTERM');
      state.dirs.delete(dir);
      rmSync(dir, { recursive: true, force: true });
    },
    kill: () => terminate('SIGKILL'),
    async restart() {
      if (stopped)
        throw new Error('express-redis-kit: cannot restart a stopped redis-server; start a new one');
      await terminate('SIGTERM');
      await launch();
    },
  };
}

/** The last `--requirepass` of the extra arguments, if any. */
function passwordIn(args: readonly string[] = []): string | undefined {
  const at = args.lastIndexOf('--requirepass');
  return at >= 0 ? args[at + 1] : undefined;
}

function writePid(pid: number | undefined, dir: string): void {
  if (!pid) return;
  try {
    if (!ownPidDir()) return;
    // Under jest the exit hook never runs (each test file has its own `process`): the reaper
    // removes the temp dir too.
    writeFileSync(join(PID_DIR, `${pid}.dir`), dir);
    writeFileSync(join(PID_DIR, String(pid)), String(process.pid));
  } catch {
    // Only used for clean-up after crashes; never fail a start over it.
  }
}

function removePid(pid: number | undefined): void {
  if (!pid) return;
  for (const file of [String(pid), `${pid}.dir`]) {
    try {
      unlinkSync(join(PID_DIR, file));
    } catch {
      // Already gone.
    }
  }
}
