import { inspect } from 'node:util';
import express from 'express';
import request from 'supertest';
import { type KitEvent, onKitEvent } from '../../lib/events';
import { rateLimit } from '../../lib/rate-limit';
import { useRedisServer } from '../helpers/redis';

// A hardened Redis with EVALSHA renamed (rename-command). Redis repeats the first arguments of a
// command it refuses in the reply: "unknown command 'evalsha', with args beginning with: …", and a
// rate-limit key there may be an API key.
const redis = useRedisServer({ args: ['--rename-command', 'EVALSHA', 'EVALSHA_HIDDEN'] });

describe('arguments Redis repeats in a refusal', () => {
  it('reach neither the events nor the log line, which still say what was refused', async () => {
    const client = redis.client();
    const events: KitEvent[] = [];
    const off = onKitEvent((e) => {
      if (e.error) events.push(e);
    });
    const lines: string[] = [];
    const app = express();
    app.use(
      rateLimit({
        redis: client,
        limit: 5,
        window: '1m',
        key: (req) => String(req.get('x-api-key')),
        logger: { warn: (line: string) => lines.push(line) },
      }),
    );
    app.get('/', (_q, res) => res.send('ok'));
    try {
      for (let i = 0; i < 3; i++) await request(app).get('/').set('x-api-key', 'sk_live_TOPSECRET42');
      expect(events.length).toBeGreaterThan(0);
      const shown = inspect(events, { depth: 10 }) + lines.join('\n');
      expect(shown).not.toContain('sk_live_TOPSECRET42');
      expect(lines.join('\n')).toMatch(/unknown command 'evalsha', with args beginning with: \(withheld\)/);
    } finally {
      off();
    }
  });
});
