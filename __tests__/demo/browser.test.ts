import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Express } from 'express';
import { type Browser, chromium, type Page } from 'playwright-core';
import { createApp } from '../../demo-app/app';
import { useRedisServer } from '../helpers/redis';

/** Waits until the element's text matches (the page updates after its fetches). */
async function waitText(page: Page, selector: string, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last: string | null = null;
  while (Date.now() < deadline) {
    last = await page.textContent(selector);
    if (last !== null && pattern.test(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${selector} never matched ${pattern}; last text: ${JSON.stringify(last)}`);
}

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

// .ci/run installs Debian's chromium; on a machine without it this suite says so instead of failing.
const describeIfChromium = existsSync(CHROMIUM) ? describe : describe.skip;
if (!existsSync(CHROMIUM)) console.warn(`browser test skipped: no ${CHROMIUM} (apt-get install -y chromium)`);

describeIfChromium('demo live page in headless Chromium', () => {
  const redis = useRedisServer();
  let app: Express;
  let server: Server;
  let browser: Browser;
  let page: Page;
  let base: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    app = createApp({
      redis: redis.client(),
      logger: false,
      catalogueLatencyMs: 100,
      sessionSecret: 's'.repeat(40),
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as { port: number }).port;
    base = `http://127.0.0.1:${port}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        // The page as another device on the LAN opens it: by a name, over plain http, which is not a
        // secure context (no crypto.randomUUID, for one).
        '--host-resolver-rules=MAP demo.lan 127.0.0.1',
      ],
    });
    page = await browser.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      // A CSP violation shows up as a console error: the page must not need unsafe-inline.
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) pageErrors.push(m.text());
    });
    // Loads the cache's scripts into Redis first: on a loaded CI machine the very first lookup
    // (script load included) can take longer than the cache's 150 ms and show BYPASS.
    await fetch(`${base}/api/products/3`);
    await page.goto(`http://demo.lan:${port}/`);
    await page.waitForSelector('body[data-live="yes"]');
    expect(await page.evaluate('window.isSecureContext')).toBe(false);
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    server?.closeAllConnections();
    server?.close();
    app?.locals.close();
  });

  it('shows a cache MISS, then a HIT that is served from Redis', async () => {
    await page.click('#cache-load');
    await waitText(page, '#cache-status', /^MISS$/);
    await page.click('#cache-load');
    await waitText(page, '#cache-status', /^HIT$/);
    expect(await page.textContent('#cache-latency')).toMatch(/\d+ ms/);
  });

  it('hammers the limiter and shows 429s, the RateLimit headers and a countdown', async () => {
    await page.click('#hammer');
    await waitText(page, '#hammer-denied', /^[1-9]/, 15_000);
    expect(await page.textContent('#hammer-ok')).toBe('10');
    expect(await page.textContent('#hammer-denied')).toBe('5');
    expect(await page.textContent('#hammer-policy')).toMatch(/q=10/);
    expect(await page.textContent('#countdown')).toMatch(/\d+ s/);
  });

  it('logs in, lists the session, places an order twice (replayed) and sees it in the live feed', async () => {
    await page.fill('#login-user', 'ada');
    await page.click('#login');
    await waitText(page, '#me', /^ada$/);
    await page.waitForSelector('#sessions li');
    expect(await page.textContent('#sessions li')).toMatch(/this device/);

    await page.click('#order-place');
    await waitText(page, '#order-status', /^201$/);
    const orderId = await page.textContent('#order-id');
    expect(await page.textContent('#order-replayed')).toBe('no');
    await page.click('#order-repeat');
    await waitText(page, '#order-replayed', /^true$/);
    expect(await page.textContent('#order-id')).toBe(orderId);
    await page.waitForSelector('#events li');
    expect(await page.locator('#events li').count()).toBe(1);
    expect(await page.textContent('#events li')).toMatch(/^order.created: Burr grinder ×1$/);
  });

  it('adds leaderboard points and logs out everywhere', async () => {
    await page.fill('#lb-player', 'ada');
    await page.click('#lb-add');
    await waitText(page, '#lb-list', /ada: 10/);
    await page.click('#logout-all');
    await waitText(page, '#me', /^nobody$/);
  });

  it('ran without script errors or CSP violations', () => {
    expect(pageErrors).toEqual([]);
  });
});
