/**
 * Regenerates docs/demo.png, the README's picture of the demo page: starts a throwaway Redis and
 * the demo, clicks through each panel in headless Chromium, and takes a full-page screenshot.
 * Usage: npx tsx scripts/screenshot.ts   (needs Debian's chromium at /usr/bin/chromium)
 */
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { createApp } from '../demo-app/app';
import { closeRedis, createRedis } from '../lib';
import { startRedisServer } from '../lib/testing';

async function main(): Promise<void> {
  const server = await startRedisServer();
  const redis = createRedis({ url: server.url });
  const app = createApp({ redis, logger: false });
  const http = app.listen(0, '127.0.0.1');
  await new Promise((r) => http.once('listening', r));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    await page.goto(`http://127.0.0.1:${(http.address() as AddressInfo).port}/`);
    await page.waitForSelector('body[data-live="yes"]');
    await page.click('#cache-load');
    await page.waitForTimeout(400);
    await page.click('#cache-load');
    await page.click('#hammer');
    await page.waitForTimeout(1500);
    await page.click('#login');
    await page.waitForTimeout(300);
    await page.click('#order-place');
    await page.waitForTimeout(300);
    await page.click('#order-repeat');
    await page.click('#lb-add');
    await page.waitForTimeout(500);
    const out = resolve(__dirname, '../docs/demo.png');
    await page.screenshot({ path: out, fullPage: true });
    console.log(`wrote ${out}`);
  } finally {
    await browser.close();
    http.closeAllConnections();
    http.close();
    app.locals.close();
    await closeRedis(redis);
    await server.stop();
  }
}

void main();
