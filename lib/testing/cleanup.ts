import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

// Clean-up of test servers, however their owner ends: stop(), its exit, or its death (the watchdog),
// and the jest global teardown (reapOrphanedServers).

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
    for (const child of state.live) killGroup(child, 'SIGKILL');
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
// Only our server: the pid may have been reused since the file was written. Redis changes into its
// --dir, so on Linux the server's temp dir names it whatever its binary is called (valkey-server…);
// elsewhere, or without the dir on record, the name has to do.
const SERVER_NAME = /(redis|valkey)-server/;
const isOurs = (pid, serverDir) => {
  try {
    if (process.platform === 'linux') {
      if (serverDir) {
        let real = serverDir;
        try { real = fs.realpathSync(serverDir); } catch {}
        const cwd = fs.readlinkSync('/proc/' + pid + '/cwd');
        return cwd === real || cwd === real + ' (deleted)';
      }
      return SERVER_NAME.test(fs.readFileSync('/proc/' + pid + '/cmdline', 'utf8'));
    }
    return SERVER_NAME.test(require('node:child_process').execFileSync('ps', ['-o', 'command=', '-p', String(pid)], { encoding: 'utf8' }));
  } catch { return false; }
};
const tmp = require('node:os').tmpdir();
const ourDir = (named) => path.dirname(named) === tmp && path.basename(named).startsWith('erk-redis-');
const reap = (ownedByTheDead) => {
  let entries = [];
  try { entries = fs.readdirSync(dir); } catch {}
  for (const entry of entries) {
    if (entry.endsWith('.dir')) continue;
    const file = path.join(dir, entry);
    // dir-<owner pid>-<name>: a server's temp dir, kept until stop() whether or not it still runs.
    if (entry.startsWith('dir-')) {
      if (!ownedByTheDead(Number(entry.split('-')[1]))) continue;
      try {
        const named = fs.readFileSync(file, 'utf8');
        if (ourDir(named)) fs.rmSync(named, { recursive: true, force: true });
      } catch {}
      try { fs.unlinkSync(file); } catch {}
      continue;
    }
    let recorded = '';
    try { recorded = fs.readFileSync(file, 'utf8'); } catch { continue; }
    if (!ownedByTheDead(Number(recorded))) continue;
    // The server's temp dir, when it is one of ours.
    let serverDir = '';
    try {
      const named = fs.readFileSync(file + '.dir', 'utf8');
      if (ourDir(named)) serverDir = named;
    } catch {}
    const pid = Number(entry);
    if (Number.isInteger(pid) && pid > 0 && isOurs(pid, serverDir)) {
      // Its group too (servers are spawned detached): what a launcher script started with it.
      try { process.kill(-pid, 'SIGKILL'); } catch {}
      try { process.kill(pid, 'SIGKILL'); } catch {}
    }
    try { fs.unlinkSync(file); } catch {}
    if (serverDir) { try { fs.rmSync(serverDir, { recursive: true, force: true }); } catch {} }
    try { fs.unlinkSync(file + '.dir'); } catch {}
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

/** Tracks a started server until it exits: killed at the owner's exit, reaped after its death. */
export function trackServer(proc: ChildProcess, dir: string): void {
  installExitHook();
  state.live.add(proc);
  writePid(proc.pid, dir);
  proc.once('exit', () => {
    state.live.delete(proc);
    removePid(proc.pid);
  });
}

/**
 * The real server a launcher script (`proc`) runs as its child: its pid file too, for the watchdog
 * and the reaper, which know a server by its temp dir (the script's is not), until `proc` exits.
 */
export function trackChild(proc: ChildProcess, pid: number, dir: string): void {
  writePid(pid, dir);
  proc.once('exit', () => removePid(pid));
}

/**
 * A server's temp dir, removed at the owner's exit unless {@link removeDir} came first. Under jest
 * that exit hook never runs, and a server that was killed (or crashed) has no pid file left to find
 * its dir by: a record of the dir itself lets the watchdog and the reaper remove it.
 */
export function keepDir(dir: string): void {
  installExitHook();
  state.dirs.add(dir);
  try {
    if (ownPidDir()) writeFileSync(dirRecord(dir), dir);
  } catch {
    // Only used for clean-up after crashes; never fail a start over it.
  }
}

export function removeDir(dir: string): void {
  state.dirs.delete(dir);
  rmSync(dir, { recursive: true, force: true });
  try {
    unlinkSync(dirRecord(dir));
  } catch {
    // Never written, or already gone.
  }
}

function dirRecord(dir: string): string {
  return join(PID_DIR, `dir-${process.pid}-${basename(dir)}`);
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

/**
 * Signals the server's whole process group (it has its own, `detached`): a `binary` that is a
 * launcher script without `exec` runs the real server as its child, which signalling the script
 * alone would leave running.
 */
export function killGroup(proc: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (proc.pid !== undefined && process.platform !== 'win32') process.kill(-proc.pid, signal);
    else proc.kill(signal);
  } catch {
    proc.kill(signal);
  }
}

/** Whether any process of the server's group is left. */
export function groupAlive(proc: ChildProcess): boolean {
  if (proc.pid === undefined || process.platform === 'win32') return false;
  try {
    process.kill(-proc.pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
