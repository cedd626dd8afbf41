import { readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { PID_DIR } from '../../lib/testing/redis-server';

/** Kills any redis-server that a crashed test worker left behind (its owner process is gone). */
export default function globalTeardown(): void {
  let entries: string[] = [];
  try {
    entries = readdirSync(PID_DIR);
  } catch {
    return;
  }
  for (const entry of entries) {
    const pid = Number(entry);
    const owner = Number(safeRead(join(PID_DIR, entry)));
    if (!Number.isInteger(pid) || isAlive(owner)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server')) process.kill(pid, 'SIGKILL');
    } catch {
      // Not running any more.
    }
    try {
      unlinkSync(join(PID_DIR, entry));
    } catch {
      // Raced with its owner.
    }
  }
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
