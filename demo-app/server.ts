import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from './app';
import { resolveDemoRedis } from './redis';

/** Starts the demo: picks Redis, listens on PORT (default 3000), shuts down cleanly on SIGINT/SIGTERM. */
async function main(): Promise<void> {
  // Checked before Redis is picked (and a throwaway server started): listen() would throw a stack
  // trace for 'abc', and read an empty PORT as 0, a random port.
  const port = demoPort(process.env.PORT);
  if (port === undefined) {
    console.error(`PORT must be a port number (0-65535); got ${JSON.stringify(process.env.PORT)}.`);
    process.exit(1);
  }
  let demoRedis: Awaited<ReturnType<typeof resolveDemoRedis>>;
  try {
    demoRedis = await resolveDemoRedis();
  } catch (error) {
    console.error((error as Error).message);
    process.exit(1);
  }
  console.log(`Redis: ${demoRedis.source}`);
  const app = createApp({ redis: demoRedis.redis });
  // A plain http server, not app.listen(): Express 5 calls listen's callback on errors too.
  const server = createServer(app);
  server.on('listening', () => {
    const { port: bound } = server.address() as AddressInfo;
    console.log(`express-redis-kit demo listening on http://localhost:${bound}`);
  });
  server.on('error', async (error) => {
    console.error(`Cannot listen on port ${port}: ${error.message}. Set PORT to another port.`);
    await app.locals.close();
    await demoRedis.close();
    process.exit(1);
  });
  server.listen(port);

  let closingSince: number | undefined;
  const shutdown = async (signal: string) => {
    if (closingSince !== undefined) {
      // One Ctrl-C reaches every process of the terminal's group, and `npm run` / tsx relay it to
      // this one as well: only a signal well after the first is a second Ctrl-C, meaning "do not
      // wait for the drain".
      if (Date.now() - closingSince < 1000) return;
      console.log(`${signal} again: exiting now`);
      await demoRedis.close();
      process.exit(1);
    }
    closingSince = Date.now();
    console.log(`${signal}: draining in-flight requests…`);
    // Stop accepting, end the live feeds (they never finish by themselves), let in-flight requests
    // finish, drop idle keep-alive sockets.
    const drained = new Promise<void>((resolve) => server.close(() => resolve()));
    await app.locals.close();
    // A keep-alive connection whose request finishes during the drain turns idle after close() has
    // looked: without this it would hold the exit for the keep-alive timeout.
    server.closeIdleConnections();
    const idle = setInterval(() => server.closeIdleConnections(), 100);
    const deadline = setTimeout(() => server.closeAllConnections(), 10_000);
    deadline.unref();
    await drained;
    clearInterval(idle);
    await demoRedis.close();
    console.log('bye');
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  if (process.env.npm_lifecycle_event) {
    // `npm run demo` passes a SIGTERM on to the shell it started, which ends without passing it on:
    // this process would be left serving, under init. A new parent is the only sign of that.
    const launcher = process.ppid;
    const orphaned = setInterval(() => {
      if (process.ppid === launcher) return;
      clearInterval(orphaned);
      if (closingSince === undefined) void shutdown('npm exited');
    }, 500);
    orphaned.unref();
  }
}

/** The port to listen on: PORT (a whole number from 0 to 65535), 3000 when unset. */
function demoPort(value: string | undefined): number | undefined {
  if (value === undefined) return 3000;
  if (!/^\d{1,5}$/.test(value.trim())) return undefined;
  const port = Number(value);
  return port <= 65535 ? port : undefined;
}

void main();
