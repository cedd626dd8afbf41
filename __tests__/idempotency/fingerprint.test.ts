import express from 'express';
import multer from 'multer';
import { canonicalJson, idempotency } from '../../lib/idempotency';
import { canonicalJsonDeep } from '../../lib/idempotency/canonical-json';
import { prng } from '../helpers/prng';
import { useRedisServer } from '../helpers/redis';
import { freshKey, orderApp, send, useServers } from './http';

/** The serializer canonicalJson replaced: its output is what stored records were fingerprinted with. */
function recursiveCanonicalJson(value: unknown): string {
  return (
    JSON.stringify(value, (_key, v: unknown) => {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return v;
      const record = v as Record<string, unknown>;
      return Object.fromEntries(
        Object.keys(record)
          .sort()
          .map((k) => [k, record[k]]),
      );
    }) ?? 'undefined'
  );
}

class Point {
  constructor(
    public z = 1,
    public a = { y: 2, b: undefined as unknown },
  ) {}
}

/** Random values of every shape a body (or a custom fingerprint input) may hold. */
function randomValue(random: () => number, depth = 0): unknown {
  const r = random();
  const pick = <T>(list: readonly T[]) => list[Math.floor(random() * list.length)]!;
  if (depth > 4 || r < 0.3) {
    return pick([
      0,
      -0,
      1.5,
      1e21,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      'x"\u2028é',
      true,
      null,
      undefined,
      () => 1,
    ]);
  }
  if (r < 0.45) {
    const list = Array.from({ length: Math.floor(random() * 4) }, () => randomValue(random, depth + 1));
    if (random() < 0.1) list.length += 2; // holes
    return list;
  }
  if (r < 0.5) return new Date(1_700_000_000_000 + Math.floor(random() * 1e9));
  if (r < 0.55) return new Point();
  if (r < 0.58) return { toJSON: (key: string) => ({ key }) };
  if (r < 0.6) return { toJSON: () => undefined };
  if (r < 0.63) return new Number(3);
  if (r < 0.66) return new Map([[1, 2]]);
  const record: Record<string, unknown> = random() < 0.2 ? Object.create(null) : {};
  for (let i = Math.floor(random() * 5); i > 0; i--) {
    record[pick(['b', 'a', 'é', '10', '2', 'Z', '_'])] = randomValue(random, depth + 1);
  }
  return record;
}

describe('idempotency default fingerprint', () => {
  it.each([
    ['canonicalJson', canonicalJson],
    ['its stack-free fallback for deep bodies', canonicalJsonDeep],
  ])(
    '%s writes exactly what the recursive version wrote (records stored before still match)',
    (_name, serialize) => {
      const random = prng(42);
      const differ: string[] = [];
      for (let i = 0; i < 5000; i++) {
        const value = randomValue(random);
        const expected = recursiveCanonicalJson(value);
        if (serialize(value) !== expected) differ.push(expected);
      }
      expect(differ.slice(0, 3)).toEqual([]);
      // JSON.parse makes "__proto__" an own property, like any other key.
      const parsed = JSON.parse('{"b":2,"__proto__":{"z":1,"a":[3]},"10":0}');
      expect(serialize(parsed)).toBe(recursiveCanonicalJson(parsed));
    },
  );

  it('canonicalJson writes a body nested past the call stack as the stack-free version does', () => {
    const deep = JSON.parse(`${'{"b":1,"a":['.repeat(20_000)}0${']}'.repeat(20_000)}`);
    expect(() => recursiveCanonicalJson(deep)).toThrow(RangeError);
    const text = canonicalJson(deep);
    expect(text.startsWith('{"a":[{"a":[')).toBe(true);
    expect(text).toBe(canonicalJsonDeep(deep));
  });

  it('canonicalJson refuses cycles and BigInts as JSON.stringify does', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(TypeError);
    expect(() => canonicalJson({ a: 1n })).toThrow(TypeError);
    const shared = { x: 1 };
    expect(canonicalJson({ b: shared, a: shared })).toBe('{"a":{"x":1},"b":{"x":1}}');
  });

  describe('over HTTP', () => {
    const redis = useRedisServer();
    const servers = useServers();

    it('a small, valid, deeply nested JSON body is fingerprinted (no RangeError) and replayed', async () => {
      let runs = 0;
      const app = orderApp(idempotency({ redis: redis.client() }), (_req, res) => {
        runs += 1;
        res.status(201).json({ runs });
      });
      const url = `${await servers.listen(app)}/orders`;
      const depth = 12_000;
      const body = '['.repeat(depth) + ']'.repeat(depth);
      const key = freshKey();
      const first = await send(url, { key, body });
      expect(first.status).toBe(201);
      const again = await send(url, { key, body });
      expect(again.status).toBe(201);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      const other = `[${'['.repeat(depth - 1)}1${']'.repeat(depth)}`;
      expect((await send(url, { key, body: other })).status).toBe(422);
      expect(runs).toBe(1);
    });

    it('warns once when a JSON body reaches it before express.json() (only its type and length tell payloads apart)', async () => {
      const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => {});
      try {
        const handler: express.RequestHandler = (_req, res) => {
          res.status(201).json({ ok: true });
        };
        const parsed = await servers.listen(orderApp(idempotency({ redis: redis.client() }), handler));
        expect((await send(`${parsed}/orders`, { key: freshKey(), body: { amount: 10 } })).status).toBe(201);
        expect(warn).not.toHaveBeenCalled();
        const early = express();
        early.post('/orders', idempotency({ redis: redis.client() }), express.json(), handler);
        const url = `${await servers.listen(early)}/orders`;
        for (const amount of [10, 11]) {
          expect((await send(url, { key: freshKey(), body: { amount } })).status).toBe(201);
        }
        expect(warn).toHaveBeenCalledTimes(1);
        expect(warn.mock.calls[0]![0]).toMatch(/before any body parser read it.*Mount express\.json\(\)/);
        expect(warn.mock.calls[0]![1]).toEqual({ code: 'ERK_IDEMPOTENCY_BODY_UNREAD' });
      } finally {
        warn.mockRestore();
      }
    });

    it.each([
      ['upload.single', (upload: multer.Multer) => upload.single('file')],
      ['upload.array', (upload: multer.Multer) => upload.array('file')],
      ['upload.fields', (upload: multer.Multer) => upload.fields([{ name: 'file' }])],
    ])(
      'with multer (%s) in front, a retry with another file is a 422, the same file replays',
      async (_name, parser) => {
        let runs = 0;
        const app = express();
        app.post('/uploads', parser(multer()), idempotency({ redis: redis.client() }), (_req, res) => {
          runs += 1;
          res.status(201).json({ runs });
        });
        const url = `${await servers.listen(app)}/uploads`;
        const upload = (content: string) => {
          const form = new FormData();
          form.set('title', 'invoice');
          form.set('file', new Blob([content], { type: 'text/csv' }), 'invoice.csv');
          return fetch(url, { method: 'POST', headers: { 'Idempotency-Key': key }, body: form });
        };
        const key = freshKey();
        expect((await upload('amount\n10\n')).status).toBe(201);
        // A new form is a new multipart boundary: the same file still replays.
        const again = await upload('amount\n10\n');
        expect(again.status).toBe(201);
        expect(again.headers.get('idempotent-replayed')).toBe('true');
        // Same name, type and size, other bytes: before, only the text fields were compared.
        expect((await upload('amount\n99\n')).status).toBe(422);
        expect(runs).toBe(1);
      },
    );
  });
});
