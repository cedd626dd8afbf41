import { type ChildProcess, spawn } from 'node:child_process';
import { resolve } from 'node:path';
import Redis from 'ioredis';
import { type RedisServerHandle, startRedisServer } from '../../lib/testing';

const root = resolve(__dirname, '../..');

/** `npm run demo`'s entry point as a real process (PORT 0 unless `env` says otherwise). */
function spawnDemo(env: NodeJS.ProcessEnv, detached = false): ChildProcess {
  return spawn(process.execPath, [resolve(root, 'node_modules/tsx/dist/cli.mjs'), 'demo-app/server.ts'], {
    cwd: root,
    env: { ...process.env, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
}

/** Starts `npm run demo`'s entry point as a real process and resolves with its URL. */
function startDemo(
  env: NodeJS.ProcessEnv,
  options: { ownGroup?: boolean } = {},
): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  // Its own process group, as in a terminal, where Ctrl-C signals the whole foreground group.
  const child = spawnDemo(env, options.ownGroup ?? false);
  let out = '';
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo did not start:\n${out}`)), 30_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const match = out.match(/listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolvePromise({ child, url: match[1]!.replace('localhost', '127.0.0.1'), output: () => out });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', () => reject(new Error(`demo exited early:\n${out}`)));
  });
}

function exitCode(child: ChildProcess): Promise<number | null> {
  return new Promise((r) =>
    child.exitCode !== null ? r(child.exitCode) : child.once('exit', (code) => r(code)),
  );
}

/** Runs the demo's entry point until it exits by itself (a start-up failure); its exit code and output. */
async function runToExit(env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  const child = spawnDemo(env);
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  const code = await exitCode(child);
  return { code, out };
}

describe('npm run demo (demo-app/server.ts)', () => {
  let redis: RedisServerHandle;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(() => redis.stop());

  it('uses REDIS_URL, serves /healthz, and exits 0 on SIGTERM after closing Redis', async () => {
    const demo = await startDemo({ REDIS_URL: redis.url });
    try {
      expect(demo.output()).toContain(`REDIS_URL (${redis.url})`);
      const res = await fetch(`${demo.url}/healthz`);
      expect(res.status).toBe(200);
      expect(((await res.json()) as { redis: { ok: boolean } }).redis.ok).toBe(true);
    } finally {
      demo.child.kill('SIGTERM');
    }
    expect(await exitCode(demo.child)).toBe(0);
  }, 60_000);

  it('on SIGTERM lets an in-flight request finish before it closes Redis and exits 0', async () => {
    const demo = await startDemo({ REDIS_URL: redis.url });
    // The report takes about a second to build. Its fill lock in Redis shows the handler is running,
    // so the signal arrives mid-request (a fixed wait could fire before a loaded machine got there).
    const inFlight = fetch(`${demo.url}/api/reports/2042`);
    const watcher = new Redis(redis.url);
    try {
      const deadline = Date.now() + 10_000;
      while ((await watcher.keys('*report:2042*')).length === 0) {
        if (Date.now() > deadline) throw new Error('the report request never reached its handler');
        await new Promise((r) => setTimeout(r, 10));
      }
    } finally {
      watcher.disconnect();
    }
    demo.child.kill('SIGTERM');
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { year: number }).year).toBe(2042);
    expect(await exitCode(demo.child)).toBe(0);
    expect(demo.output()).toMatch(/SIGTERM: draining in-flight requests/);
  }, 60_000);

  it('starts a throwaway redis-server when REDIS_URL is unset and nothing listens on 6379, and stops it on exit', async () => {
    const env: NodeJS.ProcessEnv = { REDIS_URL: '' };
    const demo = await startDemo(env);
    let serverUrl = '';
    try {
      const out = demo.output();
      // A developer machine may run its own Redis on 6379; then the demo rightly uses it.
      if (out.includes('local Redis at redis://127.0.0.1:6379')) return;
      serverUrl = out.match(/throwaway redis-server at (redis:\/\/\S+)/)![1]!;
      expect((await fetch(`${demo.url}/healthz`)).status).toBe(200);
    } finally {
      demo.child.kill('SIGINT');
    }
    expect(await exitCode(demo.child)).toBe(0);
    const port = Number(serverUrl.split(':').pop());
    const { connect } = await import('node:net');
    const refused = await new Promise<boolean>((r) => {
      const s = connect({ host: '127.0.0.1', port });
      s.on('connect', () => {
        s.destroy();
        r(false);
      });
      s.on('error', () => r(true));
    });
    expect(refused).toBe(true);
  }, 60_000);

  it('ends open live feeds on SIGTERM instead of waiting 10 s for them', async () => {
    const demo = await startDemo({ REDIS_URL: redis.url });
    const feed = await fetch(`${demo.url}/api/events`);
    const reader = feed.body!.getReader();
    await reader.read(); // ": connected"
    const started = Date.now();
    demo.child.kill('SIGTERM');
    expect(await exitCode(demo.child)).toBe(0);
    expect(Date.now() - started).toBeLessThan(5000);
    // The stream ended cleanly (no cut chunk).
    let ended = false;
    while (!ended) ended = (await reader.read()).done;
  }, 60_000);

  it('reports a port already in use in one line and exits 1 (no stack trace)', async () => {
    const { createServer } = await import('node:net');
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    try {
      const port = (busy.address() as { port: number }).port;
      const child = spawn(
        process.execPath,
        [resolve(root, 'node_modules/tsx/dist/cli.mjs'), 'demo-app/server.ts'],
        {
          cwd: root,
          env: { ...process.env, PORT: String(port), REDIS_URL: redis.url },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      child.stdout!.on('data', (c) => (out += c));
      child.stderr!.on('data', (c) => (out += c));
      expect(await exitCode(child)).toBe(1);
      expect(out).toMatch(new RegExp(`Cannot listen on port ${port}: .*EADDRINUSE`));
      expect(out).not.toMatch(/TypeError|\n\s+at /);
    } finally {
      busy.close();
    }
  }, 60_000);

  it('Ctrl-C in a terminal (SIGINT to the whole process group) leaves its throwaway Redis up until the demo closes it', async () => {
    const demo = await startDemo({ REDIS_URL: '' }, { ownGroup: true });
    const out = demo.output();
    if (out.includes('local Redis at redis://127.0.0.1:6379')) {
      process.kill(-demo.child.pid!, 'SIGINT');
      return;
    }
    // A request in flight when Ctrl-C comes: it still needs Redis while the demo drains.
    const inFlight = fetch(`${demo.url}/api/reports/2043`);
    await new Promise((r) => setTimeout(r, 300));
    process.kill(-demo.child.pid!, 'SIGINT');
    expect((await inFlight).status).toBe(200);
    expect(await exitCode(demo.child)).toBe(0);
    // Its clients never saw Redis go away before they were closed.
    expect(demo.output()).not.toMatch(/unreachable/);
    expect(demo.output()).toMatch(/bye/);
  }, 60_000);

  it('`npm run demo` stops serving and exits cleanly when npm itself gets SIGTERM', async () => {
    // npm passes the signal to the shell it started, which ends without passing it on.
    const npm = spawn('npm', ['run', 'demo'], {
      cwd: root,
      env: { ...process.env, PORT: '0', REDIS_URL: redis.url },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so the clean-up below also reaches a demo left behind by npm.
      detached: true,
    });
    let out = '';
    npm.stdout!.on('data', (c) => (out += c));
    npm.stderr!.on('data', (c) => (out += c));
    try {
      const deadline = Date.now() + 30_000;
      while (!/listening on (http:\/\/\S+)/.test(out)) {
        if (Date.now() > deadline) throw new Error(`demo did not start:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = out.match(/listening on (http:\/\/\S+)/)![1]!.replace('localhost', '127.0.0.1');
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      npm.kill('SIGTERM');
      // The demo still writes to the pipe npm handed it, after npm has gone.
      const gone = Date.now() + 10_000;
      while (!/bye/.test(out) && Date.now() < gone) await new Promise((r) => setTimeout(r, 50));
      expect(out).toMatch(/npm exited: draining in-flight requests[\s\S]*bye/);
      await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    } finally {
      try {
        process.kill(-npm.pid!, 'SIGKILL');
      } catch {
        // Every process of the group has exited.
      }
    }
  }, 60_000);

  it('names REDIS_URL (password masked) when it is not a valid URL, and exits 1', async () => {
    const { code, out } = await runToExit({ REDIS_URL: 'redis://u:p/w@127.0.0.1:6379' });
    expect(code).toBe(1);
    expect(out).toMatch(/option "REDIS_URL" is not a valid URL; got "redis:\/\/u:\*\*\*\*@/);
    expect(out).not.toMatch(/p\/w/);
  }, 60_000);

  it('refuses a PORT that is no port number in one line, before starting any Redis (no stack trace)', async () => {
    for (const PORT of ['abc', '', '70000']) {
      const { code, out } = await runToExit({ PORT, REDIS_URL: '' });
      expect([PORT, code]).toEqual([PORT, 1]);
      expect(out).toContain(`PORT must be a port number (0-65535); got ${JSON.stringify(PORT)}.`);
      expect(out).not.toMatch(/\n\s+at |Redis:/);
    }
  }, 60_000);

  it('exits 1 with the install hint when no redis-server can be found', async () => {
    const { code, out } = await runToExit({ REDIS_URL: '', REDIS_SERVER_BIN: '/nonexistent/redis-server' });
    if (out.includes('local Redis at')) return;
    expect(code).toBe(1);
    expect(out).toMatch(/apt-get install -y redis-server/);
    expect(out).toMatch(/Or set REDIS_URL to a running Redis\./);
  }, 60_000);
});
