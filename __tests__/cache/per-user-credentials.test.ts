import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import express, { type Request } from 'express';
import request from 'supertest';
import { cacheResponse } from '../../lib/cache';
import type { RedisClient } from '../../lib/client';
import { captureEvents } from '../helpers/events';
import { eventually, useFlushedClient, useRedisServer } from '../helpers/redis';
import { quietLogger } from './helpers';

const redis = useRedisServer();
let client: RedisClient;
useFlushedClient(redis, (c) => {
  client = c;
});

describe('cacheResponse: credential carriers beyond Authorization and cookies', () => {
  it('never serves the answer for one api_key header (Swagger petstore style) to another key', async () => {
    const app = express();
    app.get(
      '/me',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      (req, res) => {
        res.json({
          owner: req.headers.api_key === 'AAA' ? 'alice' : req.headers.api_key === 'BBB' ? 'bob' : null,
        });
      },
    );
    const events = captureEvents('cache');
    try {
      const alice = await request(app).get('/me').set('api_key', 'AAA');
      expect(alice.body).toEqual({ owner: 'alice' });
      // Stored (it was, before), or bypassed as it must be.
      await eventually(
        () => events.events.some((e) => e.type === 'store' || e.type === 'bypass'),
        'stored or bypassed',
      );
      const bob = await request(app).get('/me').set('api_key', 'BBB');
      expect({ xcache: bob.headers['x-cache'], body: bob.body }).toEqual({
        xcache: 'BYPASS',
        body: { owner: 'bob' },
      });
    } finally {
      events.stop();
    }
  });
});

describe('cacheResponse: scope values that are different strings', () => {
  it("never serves user '\\uD800' the entry of user '\\uFFFD'", async () => {
    const app = express();
    // Front auth: a JWT-like bearer whose JSON payload carries the user id (JSON.parse keeps lone surrogates).
    app.use((req, _res, next) => {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (token)
        (req as unknown as { user?: { sub: string } }).user = JSON.parse(
          Buffer.from(token, 'base64url').toString(),
        );
      next();
    });
    const scope = (req: Request) => (req as unknown as { user?: { sub: string } }).user?.sub;
    app.get(
      '/me',
      cacheResponse({ redis: client, ttl: '1m', l1: false, scope, logger: quietLogger() }),
      (req, res) => {
        res.json({ sub: JSON.stringify(scope(req)) });
      },
    );
    const bearer = (sub: string) => `Bearer ${Buffer.from(JSON.stringify({ sub })).toString('base64url')}`;
    const events = captureEvents('cache');
    try {
      const victim = await request(app).get('/me').set('Authorization', bearer('\uFFFD'));
      expect(victim.body).toEqual({ sub: JSON.stringify('\uFFFD') });
      await events.waitFor('store', 1);
      const other = await request(app).get('/me').set('Authorization', bearer('\uD800'));
      expect({ xcache: other.headers['x-cache'], body: other.body }).toEqual({
        xcache: 'BYPASS',
        body: { sub: JSON.stringify('\uD800') },
      });
    } finally {
      events.stop();
    }
  });
});

describe('cacheResponse: an identity carried by the TLS connection (client certificate)', () => {
  it('never serves the answer for one client certificate to another', async () => {
    // Test-only certificates (a CA, server, alice and bob), made once with openssl: see the README there.
    const dir = join(__dirname, '../fixtures/mtls');
    const file = (n: string) => readFileSync(join(dir, n));
    const app = express();
    app.get(
      '/me',
      cacheResponse({ redis: client, ttl: '1m', l1: false, logger: quietLogger() }),
      (req, res) => {
        const cert = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
        res.json({ user: cert.subject?.CN ?? null });
      },
    );
    const server = https.createServer(
      {
        key: file('server.key'),
        cert: file('server.crt'),
        ca: file('ca.crt'),
        requestCert: true,
        rejectUnauthorized: true,
      },
      app,
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const { port } = server.address() as AddressInfo;
    const get = (cn: string) =>
      new Promise<{ xcache: string | undefined; body: unknown }>((resolve, reject) => {
        https
          .get(
            {
              host: '127.0.0.1',
              port,
              path: '/me',
              key: file(`${cn}.key`),
              cert: file(`${cn}.crt`),
              ca: file('ca.crt'),
              rejectUnauthorized: false,
              agent: false,
            },
            (res) => {
              let data = '';
              res.on('data', (c) => (data += c));
              res.on('end', () =>
                resolve({ xcache: res.headers['x-cache'] as string, body: JSON.parse(data) }),
              );
            },
          )
          .on('error', reject);
      });
    const events = captureEvents('cache');
    try {
      expect((await get('alice')).body).toEqual({ user: 'alice' });
      // Stored (it was, before), or bypassed as it must be.
      await eventually(
        () => events.events.some((e) => e.type === 'store' || e.type === 'bypass'),
        'stored or bypassed',
      );
      const bob = await get('bob');
      expect(bob).toEqual({ xcache: 'BYPASS', body: { user: 'bob' } });
    } finally {
      events.stop();
      server.closeAllConnections();
      await new Promise((r) => server.close(() => r(undefined)));
    }
  });
});
