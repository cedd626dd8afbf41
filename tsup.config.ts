import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'lib/index.ts', 'testing/index': 'lib/testing/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  outDir: 'dist',
  // Runtime dependencies stay external so the user's ioredis/express copies are the ones used.
  external: ['ioredis', 'express', 'express-session'],
});
