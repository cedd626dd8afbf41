import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(__dirname, '../..');
const run = (cmd: string, args: string[], cwd: string) =>
  execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });

/**
 * Packs the package as npm would publish it, installs the tarball into throwaway ESM and CJS projects
 * (no network: its dependencies are linked from this checkout), and loads both entry points with types.
 */
describe('published package', () => {
  let work: string;
  let tarball: string;

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'erk-pack-'));
    run('npm', ['run', 'build', '--silent'], root);
    run('npm', ['pack', '--pack-destination', work, '--silent'], root);
    tarball = join(work, readdirSync(work).find((f) => f.endsWith('.tgz'))!);
  }, 180_000);

  afterAll(() => rmSync(work, { recursive: true, force: true }));

  function project(name: string, type: 'module' | 'commonjs'): string {
    const dir = join(work, name);
    const pkgDir = join(dir, 'node_modules', 'express-redis-kit');
    run('mkdir', ['-p', pkgDir], work);
    run('tar', ['-xzf', tarball, '-C', pkgDir, '--strip-components=1'], work);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, private: true, type }));
    // Resolve the package's own dependencies (ioredis…) from this checkout instead of the network.
    for (const entry of readdirSync(join(root, 'node_modules'))) {
      if (entry.startsWith('.') || entry === 'express-redis-kit') continue;
      symlinkSync(join(root, 'node_modules', entry), join(dir, 'node_modules', entry));
    }
    return dir;
  }

  it('ships only dist, the README and the LICENSE', () => {
    const listing = run('tar', ['-tzf', tarball], work);
    expect(listing).toMatch(/package\/dist\/index\.mjs/);
    expect(listing).toMatch(/package\/dist\/index\.js/);
    expect(listing).toMatch(/package\/dist\/index\.d\.ts/);
    expect(listing).toMatch(/package\/LICENSE/);
    expect(listing).not.toMatch(/package\/lib\//);
    expect(listing).not.toMatch(/__tests__/);
  });

  it('depends on the types its declarations import (a TypeScript app has only express and its own @types)', () => {
    const declarations = run('tar', ['-xzOf', tarball, 'package/dist/index.d.ts'], work);
    const pkg = JSON.parse(run('tar', ['-xzOf', tarball, 'package/package.json'], work));
    const imported = new Set([...declarations.matchAll(/from '([^'.][^']*)'/g)].map((m) => m[1]!));
    for (const mod of imported) {
      if (mod.startsWith('node:') || mod === 'express') continue; // Node's own; the peer
      // ioredis ships its own types and is a peer: the app's copy (and its types) are the kit's.
      const ownTypes = mod === 'ioredis';
      expect({
        mod,
        declared: ownTypes ? mod in pkg.peerDependencies : `@types/${mod}` in pkg.dependencies,
      }).toEqual({
        mod,
        declared: true,
      });
    }
    expect(imported.has('express-session')).toBe(true);
  });

  it('loads with import from an ESM project, including the testing entry', () => {
    const dir = project('esm-app', 'module');
    writeFileSync(
      join(dir, 'main.js'),
      `import { createRedis, pingRedis } from 'express-redis-kit';
import { startRedisServer } from 'express-redis-kit/testing';
import * as kit from 'express-redis-kit';
const contract = ['rateLimit', 'cacheResponse', 'createCache', 'withLock', 'idempotency', 'redisSession', 'closeRedis', 'connectRedis', 'onKitEvent'];
console.log(JSON.stringify({ createRedis: typeof createRedis, pingRedis: typeof pingRedis, start: typeof startRedisServer, contract: contract.filter((n) => typeof kit[n] !== 'function') }));`,
    );
    const out = JSON.parse(execFileSync('node', ['main.js'], { cwd: dir, encoding: 'utf8' }));
    // Every factory of the public contract is there, as a function.
    expect(out).toEqual({ createRedis: 'function', pingRedis: 'function', start: 'function', contract: [] });
  });

  it('loads with require from a CJS project', () => {
    const dir = project('cjs-app', 'commonjs');
    writeFileSync(
      join(dir, 'main.js'),
      `const { createRedis, closeRedis } = require('express-redis-kit');
const { startRedisCluster } = require('express-redis-kit/testing');
console.log(JSON.stringify({ createRedis: typeof createRedis, closeRedis: typeof closeRedis, cluster: typeof startRedisCluster }));`,
    );
    const out = JSON.parse(execFileSync('node', ['main.js'], { cwd: dir, encoding: 'utf8' }));
    expect(out).toEqual({ createRedis: 'function', closeRedis: 'function', cluster: 'function' });
  });

  /** What the README tells middleware to read on a request: typed by the kit's declarations alone. */
  const requestFields = (pkg: string, ns = '') =>
    `${ns ? '' : `import { CACHE_REFRESH } from '${pkg}';\n`}import type { Request } from 'express';\n` +
    `export const fields = (req: Request): [unknown, number | undefined] => [req[${ns}CACHE_REFRESH], req.rateLimit?.remaining];\n`;

  it('gives types to both import and require users', () => {
    for (const [name, type, source] of [
      [
        'esm-types',
        'module',
        `import { createRedis, type CreateRedisOptions } from 'express-redis-kit';\nconst o: CreateRedisOptions = { commandTimeout: 100 };\nexport const c = createRedis(o);\n${requestFields('express-redis-kit')}`,
      ],
      [
        'cjs-types',
        'commonjs',
        `import kit = require('express-redis-kit');\nexport const c = kit.createRedis({ commandTimeout: 100 });\n${requestFields('express-redis-kit', 'kit.')}`,
      ],
    ] as const) {
      const dir = project(name, type);
      writeFileSync(join(dir, 'main.ts'), source);
      writeFileSync(
        join(dir, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            module: 'nodenext',
            moduleResolution: 'nodenext',
            strict: true,
            noEmit: true,
            skipLibCheck: true,
            types: ['node'],
          },
          files: ['main.ts'],
        }),
      );
      // A deliberate type error must be caught, so the check is known to be real.
      writeFileSync(
        join(dir, 'bad.ts'),
        `import { createRedis } from 'express-redis-kit';\ncreateRedis({ commandTimeout: 'slow' });\n`,
      );
      run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', dir], dir);
      expect(() =>
        run(
          process.execPath,
          [
            join(root, 'node_modules/typescript/bin/tsc'),
            '--module',
            'nodenext',
            '--noEmit',
            '--skipLibCheck',
            '--types',
            'node',
            'bad.ts',
          ],
          dir,
        ),
      ).toThrow();
    }
  });

  it('gives types to the testing entry under the classic "node" resolution of older CommonJS projects', () => {
    const dir = project('node10-types', 'commonjs');
    writeFileSync(
      join(dir, 'main.ts'),
      `import { startRedisServer } from 'express-redis-kit/testing';
import { rateLimit } from 'express-redis-kit';
export const both = [startRedisServer, rateLimit];
`,
    );
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'commonjs',
          moduleResolution: 'node',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: ['node'],
        },
        files: ['main.ts'],
      }),
    );
    run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', dir], dir);
  });
});
