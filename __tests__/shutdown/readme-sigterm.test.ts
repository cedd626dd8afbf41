import { request } from 'node:http';
import { useRedisServer } from '../helpers/redis';
import { send, sleep } from '../idempotency/http';
import { type ReadmeApp, startReadmeApp } from './fixtures/spawn';

// The README's shutdown recipe ("Connection: createRedis"):
//   process.on('SIGTERM', () => server.close(() => void closeRedis(redis, { timeoutMs: 5000 })));
// "stop taking requests, let those in flight finish, then close Redis". server.close's callback
// fires when the last *connection* closes, not when the last *handler* is done.
const redis = useRedisServer();
const apps: ReadmeApp[] = [];
afterEach(() => {
  for (const a of apps.splice(0)) a.kill();
});
const start = async (env: Record<string, string> = {}) => {
  const a = await startReadmeApp(redis.server.url, env);
  apps.push(a);
  return a;
};

/** Sends a request and drops the connection once `when` resolves (the client's own timeout). */
function sendAndLeave(url: string, method: string, headers: Record<string, string>, when: Promise<void>) {
  const req = request(url, { method, headers });
  req.on('error', () => {});
  req.end(method === 'POST' ? '{}' : undefined);
  void when.then(() => req.destroy());
}

/** POST on a connection of its own that the client closes after the answer (no keep-alive). */
function postOnce(url: string, key: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: 'POST',
      agent: false,
      headers: { 'Idempotency-Key': key, 'Content-Type': 'application/json', Connection: 'close' },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.end('{}');
  });
}

describe('SIGTERM with the README recipe while a handler is still running', () => {
  it('idempotency: a client that left mid-handler gets the stored answer on retry (README: "its answer is stored for the retry"), and the handler runs once', async () => {
    const a = await start({ HANDLER_MS: '800' });
    const b = await start({ INSTANCE: 'b' });
    const key = `k-${Date.now()}`;
    sendAndLeave(
      `${a.url}/orders`,
      'POST',
      { 'Idempotency-Key': key, 'Content-Type': 'application/json' },
      a.waitFor(/RUN orders 1/),
    );
    await a.waitFor(/RUN orders 1/);
    await sleep(50); // the client has gone: its connection is closed
    a.child.kill('SIGTERM');
    await a.waitFor(/ANSWERED orders/); // the handler did its work (the order exists) and answered
    await a.exited;

    // The client retries (on another instance, or on this one restarted) until it is not told 409.
    let retry = await send(`${b.url}/orders`, { key, body: {} });
    const deadline = Date.now() + 5000;
    while (retry.status === 409 && Date.now() < deadline) {
      await sleep(100);
      retry = await send(`${b.url}/orders`, { key, body: {} });
    }
    const diagnostics = `instance A:\n${a.output()}\ninstance B:\n${b.output()}`;
    // A's answer, replayed: the order was created once.
    expect({
      status: retry.status,
      replayed: retry.headers.get('idempotent-replayed'),
      body: retry.json(),
      diagnostics,
    }).toEqual({
      status: 201,
      replayed: 'true',
      body: { order: 1, by: 'a' },
      diagnostics,
    });
    expect(b.output()).not.toMatch(/RUN orders/);
  });
});

describe('SIGTERM with the README recipe, then the last client leaves mid-fill', () => {
  it('cacheResponse: the fill lock the leaving request held is released (not left for lockTimeout, 5 s)', async () => {
    const raw = redis.client();
    const a = await start({ HANDLER_MS: '3000' });
    const b = await start({ INSTANCE: 'b', HANDLER_MS: '0' });
    // A's request takes the fill lock of /products/9 and runs the origin.
    let leave!: () => void;
    sendAndLeave(`${a.url}/products/9`, 'GET', {}, new Promise<void>((resolve) => (leave = resolve)));
    await a.waitFor(/RUN products 1/);
    a.child.kill('SIGTERM'); // server.close() now waits for that one connection
    await sleep(100);
    leave(); // the client gives up: its connection was the last one, so closeRedis runs now
    await a.waitFor(/CLOSED/);
    const locks = await raw.keys('erk:c:*:lock');
    // The request was broken off: its fill lock must be released, as it is without the shutdown.
    const started = Date.now();
    const answer = await send(`${b.url}/products/9`, { method: 'GET' });
    const waitedMs = Date.now() - started;
    expect(answer.status).toBe(200);
    expect({ locks, slow: waitedMs > 1000 }).toEqual({ locks: [], slow: false });
  });
});

describe('SIGTERM with the README recipe while a timeout guard has answered and the handler works on', () => {
  it('idempotency: the handler\'s own later answer is stored for the retry (README "timed out" row), and it runs once', async () => {
    const a = await start({ HANDLER_MS: '800' });
    const b = await start({ INSTANCE: 'b', HANDLER_MS: '0' });
    const key = `g-${Date.now()}`;
    // A client (or a load balancer) that does not keep the connection: it closes after the answer.
    const first = postOnce(`${a.url}/guarded`, key);
    await a.waitFor(/RUN guarded 1/);
    a.child.kill('SIGTERM');
    expect(await first).toBe(503); // the guard's answer, at 300 ms
    await a.waitFor(/ANSWERED guarded/); // the handler's own answer, at 800 ms: the work was done
    await a.exited;
    let retry = await send(`${b.url}/guarded`, { key, body: {} });
    const deadline = Date.now() + 5000;
    while (retry.status === 409 && Date.now() < deadline) {
      await sleep(100);
      retry = await send(`${b.url}/guarded`, { key, body: {} });
    }
    expect({
      status: retry.status,
      replayed: retry.headers.get('idempotent-replayed'),
      body: retry.body.toString(),
    }).toEqual({
      status: 201,
      replayed: 'true',
      body: JSON.stringify({ order: 1, by: 'a' }),
    });
    expect(b.output()).not.toMatch(/RUN guarded/);
  });
});
