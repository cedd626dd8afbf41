import { createServer, get, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { Express } from 'express';
import { createApp } from '../../demo-app/app';
import { EVENTS_CHANNEL, MAX_BUFFERED, MAX_FEEDS_PER_CLIENT } from '../../demo-app/routes/events';
import { eventually, useRedisServer } from '../helpers/redis';

describe('demo live feed and a client that stops reading', () => {
  const redis = useRedisServer();
  let app: Express;

  beforeAll(() => {
    app = createApp({ redis: redis.client(), logger: false, sessionSecret: 'x'.repeat(40) });
  });
  afterAll(() => app.locals.close());

  it('drops the client once its unsent events pass MAX_BUFFERED, instead of buffering every event for it', async () => {
    const server = createServer(app);
    let feed: ServerResponse | undefined;
    server.on('request', (req, res) => {
      if (req.url === '/api/events') feed = res;
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    // Sends the request, reads the headers, then never reads again.
    const socket = connect({ port, host: '127.0.0.1' });
    socket.on('error', () => {});
    try {
      await new Promise<void>((r) => socket.once('connect', r));
      socket.write('GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n');
      await new Promise<void>((r) => socket.once('data', () => r()));
      socket.pause();
      const publisher = redis.plain();
      await eventually(
        async () => Number(await publisher.publish(EVENTS_CHANNEL, '{}')) > 0,
        'the feed subscribed',
      );
      // Past what the kernel's socket buffers take on loopback, then past MAX_BUFFERED.
      const event = JSON.stringify({ type: 'order.created', order: { item: 'x'.repeat(1000) } });
      for (let sent = 0; sent < 12_000 && !feed!.destroyed; sent += 200) {
        await Promise.all(Array.from({ length: 200 }, () => publisher.publish(EVENTS_CHANNEL, event)));
      }
      await eventually(() => feed!.destroyed, 'the stalled client dropped');
      expect(feed!.writableLength).toBeLessThan(MAX_BUFFERED + 2_000);
    } finally {
      socket.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it('refuses a client more than MAX_FEEDS_PER_CLIENT feeds at once (429), and takes one again once it closes one', async () => {
    const server = createServer(app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const feeds: IncomingMessage[] = [];
    const openFeed = () =>
      new Promise<IncomingMessage>((resolve, reject) => {
        get({ host: '127.0.0.1', port, path: '/api/events', agent: false }, resolve).on('error', reject);
      });
    try {
      for (let i = 0; i < MAX_FEEDS_PER_CLIENT; i++) feeds.push(await openFeed());
      const refused = await openFeed();
      refused.resume();
      const statuses = [...feeds.map((f) => f.statusCode), refused.statusCode];
      expect(statuses).toEqual([...Array(MAX_FEEDS_PER_CLIENT).fill(200), 429]);
      expect(refused.headers['retry-after']).toBe('15');
      feeds.shift()!.destroy();
      await eventually(async () => {
        const again = await openFeed();
        if (again.statusCode === 200) feeds.push(again);
        else again.resume();
        return again.statusCode === 200;
      }, 'a feed accepted again after one closed');
    } finally {
      for (const feed of feeds) feed.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('demo live feed: an IPv6 client behind a trusted proxy (TRUST_PROXY=1)', () => {
  const redis = useRedisServer();
  let app: Express;
  beforeAll(() => {
    process.env.TRUST_PROXY = '1';
    app = createApp({ redis: redis.client(), logger: false, sessionSecret: 'x'.repeat(40) });
  });
  afterAll(async () => {
    delete process.env.TRUST_PROXY;
    await app.locals.close();
  });

  it('counts feeds per /56, as the /api limiter groups addresses: rotating addresses in one line does not pass the cap', async () => {
    const server = createServer(app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const feeds: IncomingMessage[] = [];
    const openFeed = (ip: string) =>
      new Promise<IncomingMessage>((resolve, reject) => {
        get(
          { host: '127.0.0.1', port, path: '/api/events', agent: false, headers: { 'X-Forwarded-For': ip } },
          resolve,
        ).on('error', reject);
      });
    try {
      for (let i = 1; i <= MAX_FEEDS_PER_CLIENT + 1; i++) feeds.push(await openFeed(`2001:db8:1:2::${i}`));
      feeds.push(await openFeed('2001:db8:2::1'));
      expect(feeds.map((f) => f.statusCode)).toEqual([...Array(MAX_FEEDS_PER_CLIENT).fill(200), 429, 200]);
    } finally {
      for (const feed of feeds) feed.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
