import { connect } from 'node:net';

/**
 * POSTs a 10-byte body in two halves, the second `restAfterMs` later, over a raw socket, and resolves
 * everything the server sent once the socket closes (it is ended after `closeAfterMs`). A handler
 * that answers before the body is complete leaves Express's final handler waiting for the rest.
 */
export function postWithSlowBody(
  url: URL,
  path: string,
  headers: Record<string, string>,
  restAfterMs: number,
  closeAfterMs: number,
): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    let got = '';
    socket.on('data', (d) => {
      got += d.toString('latin1');
    });
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
    const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
    socket.write(
      `POST ${path} HTTP/1.1\r\nHost: x\r\n${lines.join('')}Content-Type: application/octet-stream\r\nContent-Length: 10\r\n\r\n12345`,
    );
    setTimeout(() => socket.write('67890'), restAfterMs);
    setTimeout(() => socket.end(), closeAfterMs);
  });
}
