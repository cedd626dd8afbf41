import { createServer, type Server, type Socket } from 'node:net';

/** A TCP server on a free loopback port that is not a (ready) Redis: `handler` runs for each socket. */
export async function fakeServer(
  handler: (socket: Socket) => void,
): Promise<{ server: Server; address: string }> {
  const server = createServer((socket) => {
    socket.on('error', () => {});
    handler(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, address: `127.0.0.1:${(server.address() as { port: number }).port}` };
}

/** Another service: an HTTP server's answer to whatever it is sent. */
export const httpService = (socket: Socket) =>
  socket.on('data', () => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'));

/**
 * A Redis still loading its dataset, as redis-server answers while it loads an RDB: the ready check's
 * INFO says loading, data commands get -LOADING.
 */
export const loadingRedis = (socket: Socket) =>
  socket.on('data', (data) => {
    for (const [, name] of data.toString().matchAll(/\*\d+\r\n\$\d+\r\n(\w+)/g)) {
      const command = name!.toUpperCase();
      if (command === 'HELLO') socket.write("-ERR unknown command 'HELLO'\r\n");
      else if (command === 'INFO') {
        const body = 'loading:1\r\nloading_eta_seconds:30\r\n';
        socket.write(`$${body.length}\r\n${body}\r\n`);
      } else socket.write('-LOADING Redis is loading the dataset in memory\r\n');
    }
  });
