import type { RedisClient } from '../lib';

/** A fake product catalogue with a slow "database", so cache hits are visible. */
export interface Product {
  id: string;
  name: string;
  price: number;
  updatedAt: string;
}

const NAMES = [
  'Espresso cup',
  'Pour-over kettle',
  'Burr grinder',
  'Milk jug',
  'Tamper',
  'Scale',
  'Filter papers',
  'Beans 1 kg',
];

/**
 * The products' changes live in Redis, not in this process: demo processes on one Redis share the
 * response cache, so one that refilled it from its own copy would undo another's price change.
 */
export class Catalogue {
  constructor(
    private readonly redis: RedisClient,
    private readonly latencyMs = 200,
    private readonly prefix = 'demo:',
  ) {}

  async get(id: string): Promise<Product | undefined> {
    await sleep(this.latencyMs);
    const base = BASE.get(id);
    return base && { ...base, ...parse(await this.redis.hgetall(this.key(id))) };
  }

  async update(id: string, changes: { price?: number; name?: string }): Promise<Product | undefined> {
    await sleep(this.latencyMs / 4);
    const base = BASE.get(id);
    if (!base) return undefined;
    // One transaction: the answer shows this change together with any other one already made.
    const replies = await this.redis
      .multi()
      .hset(this.key(id), { ...changes, updatedAt: new Date().toISOString() })
      .hgetall(this.key(id))
      .exec();
    const [error, stored] = replies?.[1] ?? [new Error('the catalogue update was discarded')];
    if (error) throw error;
    return { ...base, ...parse(stored as Record<string, string>) };
  }

  private key(id: string): string {
    return `${this.prefix}product:${id}`;
  }
}

const BASE = new Map<string, Product>(
  NAMES.map((name, i): [string, Product] => {
    const id = String(i + 1);
    return [id, { id, name, price: 5 + i * 7, updatedAt: new Date(0).toISOString() }];
  }),
);

function parse(stored: Record<string, string>): Partial<Product> {
  const changes: Partial<Product> = {};
  if (stored.name !== undefined) changes.name = stored.name;
  if (stored.price !== undefined) changes.price = Number(stored.price);
  if (stored.updatedAt !== undefined) changes.updatedAt = stored.updatedAt;
  return changes;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
