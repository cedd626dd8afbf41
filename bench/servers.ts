import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import type { RequestSpec } from './scenarios/types';
import type { RunnerMessage, ServerMessage } from './server';

/** A running scenario server, or why it is not running. */
export type Started =
  | {
      ok: true;
      port: number;
      request: RequestSpec;
      /** Redis commands the server's client sent since the last call. */
      takeCommands(): Promise<Record<string, number>>;
      stop(): Promise<void>;
    }
  | { ok: false; reason: string };

const START_TIMEOUT_MS = 30_000;

/** Forks `bench/server.ts <id>` through tsx and waits for its ready/skip/error message. */
export function startServer(id: string, redisUrl: string): Promise<Started> {
  const child = fork(join(__dirname, 'server.ts'), [id], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, BENCH_REDIS_URL: redisUrl, NODE_ENV: 'production' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve) => {
    let done = false;
    const timer = setTimeout(
      () => finish({ ok: false, reason: 'server did not start within 30 s' }),
      START_TIMEOUT_MS,
    );
    const finish = (started: Started) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.removeAllListeners('message');
      if (!started.ok) child.kill('SIGKILL');
      resolve(started);
    };
    child.on('message', (message: ServerMessage) => {
      if (message.type === 'ready') {
        finish({
          ok: true,
          port: message.port,
          request: message.request,
          takeCommands: () => takeCommands(child),
          stop: () => stopChild(child),
        });
      } else if (message.type === 'skip') {
        finish({ ok: false, reason: message.reason });
      } else if (message.type === 'error') {
        finish({ ok: false, reason: `server failed: ${message.message}` });
      }
    });
    child.once('exit', (code) =>
      finish({ ok: false, reason: `server exited (code ${code}) before it was ready` }),
    );
  });
}

function takeCommands(child: ChildProcess): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: ServerMessage) => {
      if (message.type !== 'commands') return;
      child.off('message', onMessage);
      resolve(message.calls);
    };
    if (!child.connected) return reject(new Error('the server process is gone'));
    child.on('message', onMessage);
    child.send('take-commands' satisfies RunnerMessage);
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.send('stop' satisfies RunnerMessage);
  });
}
