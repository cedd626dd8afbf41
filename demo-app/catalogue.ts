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

export class Catalogue {
  private readonly products = new Map<string, Product>();

  constructor(private readonly latencyMs = 200) {
    NAMES.forEach((name, i) => {
      const id = String(i + 1);
      this.products.set(id, { id, name, price: 5 + i * 7, updatedAt: new Date(0).toISOString() });
    });
  }

  async get(id: string): Promise<Product | undefined> {
    await sleep(this.latencyMs);
    const product = this.products.get(id);
    return product && { ...product };
  }

  async update(id: string, changes: { price?: number; name?: string }): Promise<Product | undefined> {
    await sleep(this.latencyMs / 4);
    const product = this.products.get(id);
    if (!product) return undefined;
    Object.assign(product, changes, { updatedAt: new Date().toISOString() });
    return { ...product };
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
