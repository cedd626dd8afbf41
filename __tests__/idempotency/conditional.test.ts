import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { idempotency } from '../../lib/idempotency';
import { captureEvents } from '../helpers/events';
import { raw } from '../helpers/raw-http';
import { useRedisServer } from '../helpers/redis';
import { freshKey, useServers } from './http';

// res.download()/res.sendFile() honour Range and the conditional headers on a POST too: the answer
// (a 206 slice, an empty 304) is one for that request's headers, and must not replay to a retry
// that did not send them. They are part of the default fingerprint when sent.
const redisServer = useRedisServer();
const servers = useServers();
const dir = mkdtempSync(join(tmpdir(), 'erk-conditional-'));
const file = join(dir, 'export.csv');
writeFileSync(file, '0123456789abcdefghij');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function exportRoute() {
  let runs = 0;
  const app = express();
  app.post('/export', idempotency({ redis: redisServer.client() }), (_req, res) => {
    runs++;
    res.download(file);
  });
  return { url: `${await servers.listen(app)}/export`, runs: () => runs };
}

describe('idempotency and answers conditional on the request headers', () => {
  it.each([
    ['a 206 slice (Range)', { range: 'bytes=0-4' }, 206, '01234'],
    ['an empty 304 (If-None-Match: *)', { 'if-none-match': '*' }, 304, ''],
  ])(
    '%s replays only to a retry with the same headers; one without them is a 422',
    async (_name, headers, status, body) => {
      const events = captureEvents('idempotency');
      try {
        const route = await exportRoute();
        const key = freshKey();
        const first = await raw(route.url, {
          method: 'POST',
          headers: { 'idempotency-key': key, ...headers },
        });
        expect([first.status, first.body.toString()]).toEqual([status, body]);
        await events.waitFor('stored', 1);
        const plain = await raw(route.url, { method: 'POST', headers: { 'idempotency-key': key } });
        expect(plain.status).toBe(422);
        const same = await raw(route.url, {
          method: 'POST',
          headers: { 'idempotency-key': key, ...headers },
        });
        expect([same.status, same.headers['idempotent-replayed'], same.body.toString()]).toEqual([
          status,
          'true',
          body,
        ]);
        expect(route.runs()).toBe(1);
      } finally {
        events.stop();
      }
    },
  );
});
