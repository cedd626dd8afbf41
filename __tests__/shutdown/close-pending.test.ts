import { closeRedis } from '../../lib/connection';
import { idempotency } from '../../lib/idempotency';
import { useRedisServer } from '../helpers/redis';

// closeRedis "sends QUIT" and its TSDoc says "QUIT lets in-flight replies arrive". A createRedis()
// client auto-pipelines (the default): a command issued in this tick waits for a setImmediate to be
// written, while QUIT (never auto-pipelined) is written at once, ahead of it. Redis closes after QUIT.
const redis = useRedisServer();

it('a command issued just before closeRedis still runs (QUIT comes after it)', async () => {
  const check = redis.client();
  const client = redis.client();
  await client.ping();
  const written = client.set('issued-before-close', '1').then(
    () => 'ok',
    (e: Error) => e.message,
  );
  await closeRedis(client, { timeoutMs: 1000 });
  expect({ reply: await written, value: await check.get('issued-before-close') }).toEqual({
    reply: 'ok',
    value: '1',
  });
});

it('a kit call started just before closeRedis (idempotency forget()) runs', async () => {
  const client = redis.client();
  const idem = idempotency({ redis: client });
  await client.ping();
  const forgot = idem.forget({ key: 'k1', route: '/orders', scope: 'u1' }).then(
    (v) => `resolved ${v}`,
    (e: Error) => `rejected: ${e.message}`,
  );
  await closeRedis(client, { timeoutMs: 1000 });
  // No record existed: resolved false (not rejected with "Connection is closed.").
  expect(await forgot).toBe('resolved false');
});
