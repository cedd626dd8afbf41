import type { Config } from 'jest';

const config: Config = {
  testEnvironment: 'node',
  roots: ['<rootDir>/__tests__'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.(t|j)sx?$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  // Each suite spawns its own redis-server; real servers need real time.
  testTimeout: 30_000,
  // The tests need a redis-server binary: said once, before any runs.
  globalSetup: '<rootDir>/__tests__/helpers/global-setup.ts',
  // Kills any redis-server a crashed suite left behind.
  globalTeardown: '<rootDir>/__tests__/helpers/global-teardown.ts',
};

export default config;
