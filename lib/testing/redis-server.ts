import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findRedisServer } from './binary';
import { groupAlive, keepDir, killGroup, removeDir, trackChild, trackServer } from './cleanup';
import { freePort, waitForPing } from './ping';

/** Options of {@link startRedisServer}. */
export interface RedisServerOptions {
  /** Port to listen on. Default: a free loopback port. */
  port?: number;
  /**
   * Path of the redis-server binary. Default: `REDIS_SERVER_BIN`, else the PATH, else
   * `/usr/bin`, `/usr/local/bin` or `/opt/homebrew/bin`.
   */
  binary?: string;
  /** Sets `requirepass` (the `default` user's password). */
  password?: string;
  /** Extra `redis-server` arguments, e.g. `['--maxmemory', '10mb']`. */
  args?: string[];
  /** How long to wait for the first PONG. Default 10 s. */
  startTimeoutMs?: number;
  /**
   * The highest free port to pick (when `port` is not given). A Cluster node needs its port plus
   * 10000 for the cluster bus, so `startRedisCluster` asks for 55535 or less. Default 65535.
   */
  maxPort?: number;
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

/** The server's own temp dir; one that cannot be made is said in terms of what to change. */
function tempDir(): string {
  try {
    return mkdtempSync(join(tmpdir(), 'erk-redis-'));
  } catch (error) {
    throw new Error(
      `express-redis-kit: cannot create the throwaway redis-server's directory in ${tmpdir()} (${(error as Error).message}). Set TMPDIR to a writable directory.`,
      { cause: error },
    );
  }
}

/**
 * Starts a throwaway redis-server on loopback: no persistence, temp dir, free port. Waits until it
 * answers PING. Throws a clear install hint when no binary is found.
 */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServerHandle> {
  const binary = findRedisServer(options.binary);
  const dir = tempDir();
  let port = options.port ?? (await freePort(options.maxPort));
  let child: ChildProcess | undefined;
  let stopped = false;
  let stopping: Promise<void> | undefined;

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
    trackServer(proc, dir);
    let exited = false;
    proc.once('exit', () => {
      exited = true;
    });
    try {
      const serverPid = await waitForPing(
        port,
        options.startTimeoutMs ?? 10_000,
        () => !exited && !spawnError,
        {
          pid: proc.pid,
          password: options.password ?? passwordIn(options.args),
        },
      );
      // A launcher's child: recorded too, so the watchdog finds it if the owner dies.
      if (serverPid !== undefined && serverPid !== proc.pid) trackChild(proc, serverPid, dir);
    } catch (error) {
      killGroup(proc, 'SIGKILL');
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

  keepDir(dir);
  // A free port can be taken between the check and redis-server's bind: retry on a fresh one. Any
  // other failure (a bad argument, a timeout) would only fail again.
  for (let attempt = 0; ; attempt++) {
    try {
      await launch();
      break;
    } catch (error) {
      if (options.port !== undefined || attempt >= 4 || !(error as { portInUse?: boolean }).portInUse) {
        removeDir(dir);
        throw error;
      }
      port = await freePort(options.maxPort);
    }
  }

  const terminate = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    killGroup(proc, signal);
    const timer = setTimeout(() => killGroup(proc, 'SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
    // A launcher's server (its child, same group) may outlive it by a moment: gone, too, when this resolves.
    // Bounded: a zombie nobody reaps (a container without an init) still counts as a member.
    const killAt = Date.now() + 3000;
    while (groupAlive(proc) && Date.now() < killAt + 1000) {
      if (Date.now() > killAt) killGroup(proc, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 10));
    }
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
    stop() {
      // A second call while the first is at work waits for it too.
      stopping ??= (async () => {
        stopped = true;
        await terminate('SIGTERM');
        removeDir(dir);
      })();
      return stopping;
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
