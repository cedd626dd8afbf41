import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';

// Is a redis-server up on a port, and is it the one we started?

/** Asks the OS for a free loopback port, at most `maxPort` (drawn again until one is). */
export async function freePort(maxPort = 65535): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = await anyFreePort();
    if (port <= maxPort) return port;
  }
  throw new Error(`no free loopback port at or below ${maxPort}`);
}

function anyFreePort(): Promise<number> {
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
 * Resolves (with the pid of the server that answered, when it could be asked) once the redis-server
 * with process id `pid`, or its child, answers on the port (or rejects after
 * `timeoutMs`). Another server that already holds the port (ours then fails to bind and exits) does
 * not count: its data is someone else's.
 */
export async function waitForPing(
  port: number,
  timeoutMs: number,
  isAlive: () => boolean = () => true,
  expect: { pid?: number; password?: string } = {},
): Promise<number | undefined> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`redis-server on port ${port} exited during start-up`);
    const { answer, pid } = await answersAs(port, expect);
    if (answer === 'ours') return pid;
    // Password-protected and its password unknown: who answers cannot be asked. One that failed to
    // bind (the port was someone else's) exits within milliseconds; still alive after that, it is ours.
    if (answer === 'locked' && (expect.pid === undefined || Date.now() - started > 1000)) return undefined;
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
): Promise<{ answer: 'ours' | 'locked' | 'no'; pid?: number }> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let seen = '';
    const done = (answer: 'ours' | 'locked' | 'no', pid?: number) => {
      socket.destroy();
      resolve({ answer, pid });
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
      if (pid && expect.pid !== undefined && !startedBy(Number(pid[1]), expect.pid)) return done('no');
      if (pid && /^\+PONG/m.test(seen)) done('ours', Number(pid[1]));
    });
  });
}

/**
 * Whether the server `pid` is the process started (`spawned`) or, on Linux, its child: a `binary`
 * that is a launcher script without `exec` runs the real server under it.
 */
function startedBy(pid: number, spawned: number): boolean {
  if (pid === spawned) return true;
  if (process.platform !== 'linux') return false;
  try {
    // Field 4 of /proc/<pid>/stat, after the command name in parentheses (which may hold spaces).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === spawned;
  } catch {
    return false;
  }
}
