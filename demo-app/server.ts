import type { AddressInfo } from 'node:net';
import { createApp } from './app';
import { resolveDemoRedis } from './redis';

/** Starts the demo: picks Redis, listens on PORT (default 3000), shuts down cleanly on SIGINT/SIGTERM. */
async function main(): Promise<void> {
  let demoRedis: Awaited<ReturnType<typeof resolveDemoRedis>>;
  try {
    demoRedis = await resolveDemoRedis();
  } catch (error) {
    console.error((error as Error).message);
    process.exit(1);
  }
  console.log(`Redis: ${demoRedis.source}`);
  const app = createApp({ redis: demoRedis.redis });
  const port = Number(process.env.PORT ?? 3000);
  const server = app.listen(port, () => {
    const { port: bound } = server.address() as AddressInfo;
    console.log(`express-redis-kit demo listening on http://localhost:${bound}`);
  });
  server.on('error', async (error) => {
    console.error(`Cannot listen on port ${port}: ${error.message}`);
    await demoRedis.close();
    process.exit(1);
  });

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    console.log(`${signal}: draining in-flight requests…`);
    // Stop accepting, let in-flight requests finish, drop idle keep-alive sockets.
    const drained = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const deadline = setTimeout(() => server.closeAllConnections(), 10_000);
    deadline.unref();
    await drained;
    await demoRedis.close();
    console.log('bye');
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

void main();
