import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'lib/index.ts', 'testing/index': 'lib/testing/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  outDir: 'dist',
  // Peer dependencies (ioredis, express) and express-session stay external: the app's copies are used.
  external: ['ioredis', 'express', 'express-session'],
});
