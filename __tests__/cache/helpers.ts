import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';

/** Listens on a free loopback port; `close()` also drops keep-alive connections. */
export async function listen(app: Express): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until Redis holds at least `count` keys matching `pattern` (stores happen after the response). */
export async function waitForKeys(
  client: { keys(pattern: string): Promise<string[]> },
  pattern: string,
  count = 1,
  timeoutMs = 3000,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const keys = await client.keys(pattern);
    if (keys.length >= count) return keys;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} key(s) matching ${pattern}`);
    await sleep(10);
  }
}

/** A logger that records warnings instead of printing them. */
export function quietLogger() {
  const warnings: Array<{ details: object; message: string }> = [];
  return { warnings, warn: (details: object, message: string) => warnings.push({ details, message }) };
}

/** Stored entries (and Vary markers/variants), leaving out fill locks and no-store markers. */
export async function entryKeys(client: { keys(pattern: string): Promise<string[]> }): Promise<string[]> {
  return (await client.keys('erk:c:*')).filter((k) => !k.endsWith(':lock') && !k.endsWith(':nostore'));
}
