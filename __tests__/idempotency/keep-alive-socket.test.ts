import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import express, { type Request } from 'express';
import { idempotency } from '../../lib/idempotency';
import { useRedisServer } from '../helpers/redis';

const redisServer = useRedisServer();

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Writes `raw` on one connection and resolves once `count` responses came back. */
function exchange(socket: net.Socket, raw: string, count: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = '';
    const onData = (d: Buffer) => {
      seen += d.toString();
      if (seen.split('HTTP/1.1 ').length - 1 >= count) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.write(raw);
  });
}

const post = (key: string) => {
  const body = `{"k":"${key}"}`;
  return `POST /pay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: ${key}\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
};

describe('idempotency on one keep-alive connection', () => {
  it.each([
    ['two idempotency() layers, one request at a time', 'double', 1],
    ['one idempotency() layer, two pipelined requests at a time', 'single', 2],
  ])(
    'holds no finished request, and socket.destroy gains no wrappers: %s',
    async (_label, mode, perRound) => {
      const redis = redisServer.client();
      const requests: Array<WeakRef<Request>> = [];
      const destroys = new Set<unknown>();
      const app = express();
      app.use(express.json());
      if (mode === 'double') app.use(idempotency({ redis, prefix: 'outer:' }));
      app.post('/pay', idempotency({ redis }), (req, res) => {
        requests.push(new WeakRef(req));
        destroys.add(req.socket.destroy);
        res.status(201).json({ ok: 1 });
      });
      const web = app.listen(0, '127.0.0.1');
      await new Promise((r) => web.once('listening', r));
      const client = net.connect((web.address() as net.AddressInfo).port, '127.0.0.1');
      await new Promise((r) => client.once('connect', r));
      try {
        let n = 0;
        for (let round = 0; round < 6; round++) {
          let raw = '';
          for (let i = 0; i < perRound; i++) raw += post(`${mode}-${process.pid}-${Date.now()}-${++n}`);
          await exchange(client, raw, perRound);
        }
        // Let the stores finish, then see which requests anything still holds.
        await new Promise((r) => setTimeout(r, 200));
        gc();
        await new Promise((r) => setImmediate(r));
        gc();
        // The last one or two may still sit in Node's own per-connection state.
        const held = requests.slice(0, -2).filter((ref) => ref.deref() !== undefined).length;
        expect({ held, wrappers: destroys.size }).toEqual({ held: 0, wrappers: 1 });
      } finally {
        client.destroy();
        await new Promise((r) => web.close(r));
      }
    },
  );
});
