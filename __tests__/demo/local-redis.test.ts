import { createServer, type Server, type Socket } from 'node:net';
import { probeLocal } from '../../demo-app/redis';
import { type RedisServerHandle, startRedisServer } from '../../lib/testing';

// The demo uses a Redis already on 6379 when one answers; what it says when something there answers
// but is passed over (two demo processes then no longer share sessions and the live feed through
// it). Probed here on other ports, with what really listens in each case.

const servers: RedisServerHandle[] = [];
const fakes: Server[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  for (const fake of fakes) fake.close();
});

async function fake(handler: (socket: Socket) => void): Promise<string> {
  const server = createServer((socket) => {
    socket.on('error', () => {});
    handler(socket);
  });
  fakes.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return `127.0.0.1:${(server.address() as { port: number }).port}`;
}

async function redis(options: Parameters<typeof startRedisServer>[0] = {}): Promise<string> {
  const server = await startRedisServer(options);
  servers.push(server);
  return `127.0.0.1:${server.port}`;
}

const probe = (where: string) => probeLocal(`redis://${where}`);

describe('the demo probing a Redis of its own on 6379', () => {
  it('uses a Redis that answers; says nothing when nothing listens, or something accepts and closes', async () => {
    expect(await probe(await redis())).toEqual({ ok: true });
    expect(await probe('127.0.0.1:1')).toEqual({ ok: false, why: undefined });
    expect(await probe(await fake((s) => s.destroy()))).toEqual({ ok: false, why: undefined });
  });

  it('names a password Redis, with the REDIS_URL that uses it', async () => {
    const where = await redis({ password: 'pw' });
    expect((await probe(where)).why).toMatch(
      new RegExp(
        `^The Redis on ${where} needs a password \\(NOAUTH.*\\); to use it, set REDIS_URL=redis://:PASSWORD@${where}\\.$`,
      ),
    );
  });

  it('names a replica, pointing at its master', async () => {
    const master = await redis();
    const where = await redis({ args: ['--replicaof', '127.0.0.1', master.split(':')[1]!] });
    expect((await probe(where)).why).toBe(
      `The Redis on ${where} is a replica; to use its master, set REDIS_URL to it.`,
    );
  });

  it('names another service (HTTP) as not a Redis server', async () => {
    const where = await fake((s) => s.on('data', () => s.end('HTTP/1.1 400 Bad Request\r\n\r\n')));
    expect((await probe(where)).why).toBe(
      `What listens on ${where} is not a Redis server (another service on that port?).`,
    );
  });

  it('a Redis still loading its dataset (or a silent listener): accepted, but not a ready Redis', async () => {
    const loading = await fake((s) =>
      s.on('data', (data) => {
        for (const [, name] of data.toString().matchAll(/\*\d+\r\n\$\d+\r\n(\w+)/g)) {
          const command = name!.toUpperCase();
          if (command === 'HELLO') s.write("-ERR unknown command 'HELLO'\r\n");
          else if (command === 'INFO') {
            const body = 'loading:1\r\nloading_eta_seconds:30\r\n';
            s.write(`$${body.length}\r\n${body}\r\n`);
          } else s.write('-LOADING Redis is loading the dataset in memory\r\n');
        }
      }),
    );
    const silent = await fake(() => {});
    for (const where of [loading, silent]) {
      expect((await probe(where)).why).toBe(
        `Something on ${where} accepted the connection but did not answer as a ready Redis (one still loading its dataset?).`,
      );
    }
  });
});
