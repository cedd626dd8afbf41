import timeout from 'connect-timeout';
import express from 'express';
import { idempotency } from '../../lib/idempotency';
import { raw } from '../helpers/raw-http';
import { eventually, useRedisServer } from '../helpers/redis';
import { freshKey, useEvents, useServers } from './http';

// How a body is framed on the wire, and what a replay can promise of it. A body that is not the
// Content-Length its answer declared (a file that shrank while sendFile read it, a length the route
// got wrong) reached its client broken: stored, its retry would get a clean answer, the length
// recomputed, that the first client never saw, so it is not stored. Trailers are not stored.
const redisServer = useRedisServer();
const servers = useServers();
const events = useEvents();
const seen = (type: string) => eventually(() => events.types().includes(type), `a "${type}" event`);
const count = (type: string) => events.types().filter((t) => t === type).length;

async function route(handler: express.RequestHandler, guard?: express.RequestHandler) {
  let runs = 0;
  const app = express();
  if (guard) app.use(guard);
  app.post('/export', idempotency({ redis: redisServer.client() }), (req, res, next) => {
    runs++;
    handler(req, res, next);
  });
  return { url: `${await servers.listen(app)}/export`, runs: () => runs };
}

const post = (url: string, key: string) =>
  raw(url, { method: 'POST', headers: { 'idempotency-key': key }, timeoutMs: 400 }).then(
    (answer) => answer,
    () => undefined, // a short body keeps its client waiting for the rest
  );

/** A retry's status, replay mark and body. */
async function retryOf(url: string, key: string) {
  const answer = await post(url, key);
  return [answer?.status, answer?.headers['idempotent-replayed'], answer?.body.toString()];
}

describe('idempotency and a body that is not its declared Content-Length', () => {
  it.each([
    ['shorter (broke off after 10 of 20 bytes)', '20', ['0123456789']],
    ['longer (declares 5, writes 10)', '5', ['01234', '56789']],
  ])('%s: released as incomplete, and the retry runs the handler again', async (_name, length, chunks) => {
    const export_ = await route((_req, res) => {
      res.status(201).setHeader('Content-Type', 'application/octet-stream');
      res.setHeader('Content-Length', length);
      for (const chunk of chunks) res.write(chunk);
      res.end();
    });
    const key = freshKey();
    await post(export_.url, key);
    await seen('released');
    expect(events.events.find((e) => e.type === 'released')).toMatchObject({ reason: 'incomplete' });
    const retry = await post(export_.url, key);
    expect(retry?.headers['idempotent-replayed']).toBeUndefined();
    expect(export_.runs()).toBe(2);
    expect(count('stored')).toBe(0);
  });

  it('a late answer behind a timeout guard, broken the same way, is not stored either', async () => {
    const export_ = await route((_req, res) => {
      setTimeout(() => {
        res.status(201).setHeader('Content-Length', '20');
        res.end('0123456789');
      }, 250);
    }, timeout('100ms'));
    const key = freshKey();
    expect((await post(export_.url, key))?.status).toBe(503);
    await seen('released');
    expect(events.events.find((e) => e.type === 'released')).toMatchObject({ reason: 'incomplete' });
    expect(count('stored')).toBe(0);
  });

  it('a body of the declared length is stored and replayed as usual', async () => {
    const export_ = await route((_req, res) => {
      res.status(201).setHeader('Content-Length', '10');
      res.write('01234');
      res.end('56789');
    });
    const key = freshKey();
    expect((await post(export_.url, key))?.body.toString()).toBe('0123456789');
    await seen('stored');
    expect(await retryOf(export_.url, key)).toEqual([201, 'true', '0123456789']);
    expect(export_.runs()).toBe(1);
  });
});

describe('idempotency and trailers', () => {
  it('replays the body without the trailers, and without the Trailer header that announced them', async () => {
    const sum = await route((_req, res) => {
      res.status(201).type('text').setHeader('Trailer', 'X-Checksum');
      res.write('abc');
      res.addTrailers({ 'X-Checksum': 'c0ffee' });
      res.end();
    });
    const key = freshKey();
    const first = await post(sum.url, key);
    expect([first?.body.toString(), first?.trailers['x-checksum']]).toEqual(['abc', 'c0ffee']);
    await seen('stored');
    const retry = await post(sum.url, key);
    expect([retry?.status, retry?.headers['idempotent-replayed'], retry?.body.toString()]).toEqual([
      201,
      'true',
      'abc',
    ]);
    expect(retry?.headers.trailer).toBeUndefined();
    expect(sum.runs()).toBe(1);
  });
});
