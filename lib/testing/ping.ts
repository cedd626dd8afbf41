import { connect, createServer } from 'node:net';

// Is a redis-server up on a port, and is it the one we started?

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
