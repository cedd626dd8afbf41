import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import { findRedisServer, startRedisServer } from '../../lib/testing';
import { freePort } from '../../lib/testing/ping';

/** Whether `pid` is a live process (not a zombie waiting for its parent). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const linux = process.platform === 'linux' ? it : it.skip;

describe('startRedisServer', () => {
  linux('a second stop() while the first is at work resolves only once the server is gone', async () => {
    const server = await startRedisServer();
    const pid = server.pid!;
    const dir = readlinkSync(`/proc/${pid}/cwd`);
    const first = server.stop();
    await server.stop();
    expect({ alive: alive(pid), dirLeft: existsSync(dir) }).toEqual({ alive: false, dirLeft: false });
    await first;
  });

  linux(
    'starts through a launcher script that runs redis-server without exec, and stop() ends the real server',
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'erk-launcher-'));
      const launcher = join(dir, 'launch-redis');
      writeFileSync(launcher, `#!/bin/sh\n${findRedisServer()} "$@"\n`);
      chmodSync(launcher, 0o755);
      try {
        // It answered, but as the script's child: "did not answer PING", and only the script was killed.
        const server = await startRedisServer({ binary: launcher, startTimeoutMs: 5000 });
        const client = new Redis(server.url);
        const info = await client.info('server');
        client.disconnect();
        const real = Number(/process_id:(\d+)/.exec(info)![1]);
        expect(real).not.toBe(server.pid);
        await server.stop();
        expect(alive(real)).toBe(false);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

describe('freePort', () => {
  linux('keeps to maxPort (a Cluster node needs its port + 10000 for the cluster bus)', async () => {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    // The lowest tenth of the range: most ports the OS hands out are above it.
    const cap = low! + Math.floor((high! - low!) / 10);
    const ports = await Promise.all(Array.from({ length: 10 }, () => freePort(cap)));
    expect(ports.filter((p) => p > cap)).toEqual([]);
  });
});
