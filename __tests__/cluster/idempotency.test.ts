import type { Response } from 'express';
import type { Cluster } from 'ioredis';
import { idempotency } from '../../lib/idempotency';
import { useRedisCluster } from '../helpers/redis';
import { freshKey, orderApp, send, sleep, useServers } from '../idempotency/http';

describe('idempotency against a real Redis Cluster', () => {
  const redis = useRedisCluster();
  const servers = useServers();

  /** One kit-made and one plain Cluster client, as two app instances would have. */
  function twoClients(): [Cluster, Cluster] {
    return [redis.client({ commandTimeout: 5000 }), redis.plain()];
  }

  it('100 concurrent identical requests across two instances run the handler once; replays are byte-identical', async () => {
    const [kit, plain] = twoClients();
    let runs = 0;
    const handler = async (_req: unknown, res: Response) => {
      runs += 1;
      await sleep(300);
      res.status(201).json({ order: 'c-1', run: runs });
    };
    const a = `${await servers.listen(orderApp(idempotency({ redis: kit, timeout: 5000 }), handler))}/orders`;
    const b = `${await servers.listen(orderApp(idempotency({ redis: plain, timeout: 5000 }), handler))}/orders`;
    const key = freshKey('cluster');
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, i) => send(i % 2 ? a : b, { key, body: { n: 1 } })),
    );

    expect(runs).toBe(1);
    const originals = answers.filter((r) => r.status === 201 && !r.headers.get('idempotent-replayed'));
    expect(originals).toHaveLength(1);
    for (const r of answers) {
      if (r === originals[0]) continue;
      expect([409, 201]).toContain(r.status);
      if (r.status === 201) expect(r.body.equals(originals[0]!.body)).toBe(true);
    }
    const replay = await send(b, { key, body: { n: 1 } });
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body.equals(originals[0]!.body)).toBe(true);
    expect((await send(a, { key, body: { n: 2 } })).status).toBe(422);
  });

  it('records spread over every master, each with a TTL, and 5xx answers are released', async () => {
    const [kit] = twoClients();
    let runs = 0;
    const app = orderApp(idempotency({ redis: kit, prefix: 'clu:' }), (_req, res) => {
      runs += 1;
      res.status(runs === 1 ? 500 : 201).json({ run: runs });
    });
    const url = `${await servers.listen(app)}/orders`;
    const first = freshKey('release');
    expect((await send(url, { key: first })).status).toBe(500);
    expect((await send(url, { key: first })).status).toBe(201);
    for (let i = 0; i < 30; i++) expect((await send(url, { key: freshKey('spread') })).status).toBe(201);

    const masters = kit.nodes('master');
    const perMaster = await Promise.all(
      masters.map(async (node) => {
        const [, keys] = await node.scan('0', 'MATCH', 'clu:*', 'COUNT', 1000);
        for (const k of keys) expect(await node.pttl(k)).toBeGreaterThan(0);
        return keys.length;
      }),
    );
    expect(perMaster.filter((n) => n > 0).length).toBe(masters.length);
  });
});
