import { checkClient } from '../../lib/client';
import { toMs } from '../../lib/duration';
import { checkPrefix, safePart, taggedKey } from '../../lib/keys';

describe('durations', () => {
  it('accepts milliseconds and ms-style strings', () => {
    expect(toMs(250, 'ttl')).toBe(250);
    expect(toMs('5m', 'ttl')).toBe(300_000);
    expect(toMs('1.5s', 'ttl')).toBe(1500);
    expect(toMs('42', 'ttl')).toBe(42);
  });

  it('names the option and the fix for bad values', () => {
    expect(() => toMs('soon', 'ttl')).toThrow(
      /option "ttl" must be a number of milliseconds or a duration string/,
    );
    expect(() => toMs(0, 'window')).toThrow(RangeError);
    expect(() => toMs(0, 'window')).toThrow(/"window" must be at least 1 ms/);
    expect(toMs(0, 'staleWhileRevalidate', { allowZero: true })).toBe(0);
    expect(() => toMs(Number.NaN, 'ttl')).toThrow(TypeError);
  });
});

describe('keys', () => {
  it('puts the operation id in a hash tag and hashes unsafe or long parts', () => {
    expect(taggedKey('erk:', 'rl', '1.2.3.4', 'p0')).toBe('erk:rl:{1.2.3.4}:p0');
    const braces = taggedKey('erk:', 'rl', 'a}{b');
    expect(braces).toMatch(/^erk:rl:\{#[A-Za-z0-9_-]{22}\}$/);
    expect(safePart('x'.repeat(65))).toMatch(/^#/);
    expect(safePart('x'.repeat(65))).toBe(safePart('x'.repeat(65)));
  });

  it('refuses prefixes with braces', () => {
    expect(() => checkPrefix('a{b}')).toThrow(/"prefix" must be a string without/);
    expect(checkPrefix('app:')).toBe('app:');
  });
});

describe('client option', () => {
  it('names the option when it is not an ioredis client', () => {
    expect(() => checkClient(undefined)).toThrow(
      /option "redis" must be an ioredis Redis or Cluster client.*required/,
    );
    expect(() => checkClient({ get() {} })).toThrow(/got an object \(Object\)/);
  });
});
