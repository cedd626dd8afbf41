import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis, { type RedisOptions } from 'ioredis';
import type { RedisClient } from '../../lib/client';
import { type CreateRedisOptions, closeRedis, createRedis } from '../../lib/connection';
import { findRedisServer, freePort, type RedisServerHandle, startRedisServer } from '../../lib/testing';
import { killGroup, trackServer } from '../../lib/testing/cleanup';

/**
 * A real Sentinel deployment on loopback: one master, `replicas` replicas and `sentinels` sentinels
 * (the same redis-server binary, `--sentinel`, each with its own writable config file), with short
 * `down-after-milliseconds` and `failover-timeout` so a failover takes a few seconds.
 */
export interface SentinelSetupOptions {
  name?: string;
  replicas?: number;
  sentinels?: number;
  quorum?: number;
  downAfterMs?: number;
  failoverTimeoutMs?: number;
  /** `requirepass` of the master and replicas (`masterauth` of the replicas, `auth-pass` of the sentinels). */
  masterPassword?: string;
  /** `requirepass` of the sentinels (and `sentinel-pass`, so they can talk to each other). */
  sentinelPassword?: string;
}

export interface SentinelHandle {
  readonly port: number;
  readonly address: string;
  /** SIGKILL. */
  kill(): Promise<void>;
  /** SIGSTOP: the sentinel still accepts TCP connections but never answers. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** The tail of its log (loglevel notice): +switch-master, +failover-end… */
  log(): string;
}

export interface SentinelSetup {
  readonly name: string;
  /** Every data server; [0] is the first master. */
  readonly servers: RedisServerHandle[];
  readonly sentinels: SentinelHandle[];
  /** `127.0.0.1:<port>` of every sentinel. */
  readonly sentinelAddresses: string[];
  /** The master's port as the (first answering) sentinel reports it. */
  masterPort(): Promise<number>;
  /** The data server currently reported as master. */
  master(): Promise<RedisServerHandle>;
  /** Waits until every live sentinel reports a master other than `oldPort`, and it says ROLE master. */
  waitForNewMaster(oldPort: number, timeoutMs?: number): Promise<number>;
  /** `SENTINEL FAILOVER <name>` and waits for the switch. Returns { from, to } ports. */
  failover(): Promise<{ from: number; to: number }>;
  /** Waits until `port` is a replica of the current master (a former master demoted), link up. */
  waitForReplica(port: number, timeoutMs?: number): Promise<void>;
  /** A plain admin connection to a data server. */
  admin(port: number): Redis;
  /** Options for createRedis's `sentinel`. */
  sentinelOption(): { sentinels: string[]; name: string; sentinelPassword?: string };
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startSentinelSetup(options: SentinelSetupOptions = {}): Promise<SentinelSetup> {
  const name = options.name ?? 'mymaster';
  const replicas = options.replicas ?? 2;
  const sentinelCount = options.sentinels ?? 3;
  const quorum = options.quorum ?? 2;
  const downAfterMs = options.downAfterMs ?? 1000;
  const failoverTimeoutMs = options.failoverTimeoutMs ?? 3000;
  const { masterPassword, sentinelPassword } = options;
  const common = [
    '--enable-debug-command',
    'yes',
    '--repl-diskless-sync',
    'yes',
    '--repl-diskless-sync-delay',
    '0',
    ...(masterPassword ? ['--masterauth', masterPassword] : []),
  ];
  const servers: RedisServerHandle[] = [];
  const sentinels: Array<SentinelHandle & { proc: ChildProcess; dir: string }> = [];
  const admins: Redis[] = [];
  const adminOf = (port: number) => {
    const c = new Redis({
      port,
      host: '127.0.0.1',
      password: masterPassword,
      lazyConnect: false,
      maxRetriesPerRequest: 1,
      retryStrategy: () => 200,
      commandTimeout: 2000,
    });
    c.on('error', () => {});
    admins.push(c);
    return c;
  };
  const stop = async () => {
    for (const a of admins) a.disconnect();
    for (const s of sentinels) {
      killGroup(s.proc, 'SIGKILL');
      rmSync(s.dir, { recursive: true, force: true });
    }
    await Promise.all(servers.map((s) => s.stop()));
  };
  try {
    servers.push(await startRedisServer({ password: masterPassword, args: common }));
    const masterPortAtStart = servers[0]!.port;
    for (let i = 0; i < replicas; i++) {
      servers.push(
        await startRedisServer({
          password: masterPassword,
          args: [...common, '--replicaof', '127.0.0.1', String(masterPortAtStart)],
        }),
      );
    }
    // Replicas in sync before the sentinels look.
    const m = adminOf(masterPortAtStart);
    await waitFor(
      async () => {
        const info = await m.info('replication');
        return (info.match(/state=online/g) ?? []).length === replicas;
      },
      'replicas online',
      15_000,
    );
    const binary = findRedisServer();
    for (let i = 0; i < sentinelCount; i++) {
      const port = await freePort();
      const dir = mkdtempSync(join(tmpdir(), 'erk-redis-sentinel-'));
      const conf = join(dir, 'sentinel.conf');
      writeFileSync(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          'daemonize no',
          `dir ${dir}`,
          'logfile ""',
          'loglevel notice',
          `sentinel monitor ${name} 127.0.0.1 ${masterPortAtStart} ${quorum}`,
          `sentinel down-after-milliseconds ${name} ${downAfterMs}`,
          `sentinel failover-timeout ${name} ${failoverTimeoutMs}`,
          `sentinel parallel-syncs ${name} ${replicas}`,
          ...(masterPassword ? [`sentinel auth-pass ${name} ${masterPassword}`] : []),
          ...(sentinelPassword
            ? [`requirepass ${sentinelPassword}`, `sentinel sentinel-pass ${sentinelPassword}`]
            : []),
          '',
        ].join('\n'),
      );
      const proc = spawn(binary, [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let log = '';
      proc.stdout?.on('data', (c: Buffer) => (log = (log + c).slice(-20000)));
      proc.stderr?.on('data', (c: Buffer) => (log = (log + c).slice(-20000)));
      trackServer(proc, dir);
      proc.unref();
      for (const stream of [proc.stdout, proc.stderr]) (stream as { unref?: () => void } | null)?.unref?.();
      const handle = {
        proc,
        dir,
        port,
        address: `127.0.0.1:${port}`,
        async kill() {
          if (proc.exitCode !== null || proc.signalCode !== null) return;
          const exited = new Promise((r) => proc.once('exit', r));
          killGroup(proc, 'SIGKILL');
          await exited;
        },
        pause: () => killGroup(proc, 'SIGSTOP'),
        resume: () => killGroup(proc, 'SIGCONT'),
        log: () => log,
      };
      sentinels.push(handle);
      const probe = new Redis({
        port,
        host: '127.0.0.1',
        password: sentinelPassword,
        retryStrategy: () => 100,
        lazyConnect: false,
      });
      probe.on('error', () => {});
      try {
        await waitFor(
          async () => Array.isArray(await probe.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)),
          `sentinel on ${port} (log: ${log})`,
          10_000,
        );
      } finally {
        probe.disconnect();
      }
    }
    // Every sentinel knows the others and the replicas (needed for a failover vote).
    await waitFor(
      async () => {
        for (const s of sentinels) {
          const c = oneShot(s.port, sentinelPassword);
          try {
            const master = packed((await c.call('SENTINEL', 'MASTER', name)) as string[]);
            if (Number(master['num-other-sentinels']) !== sentinelCount - 1) return false;
            if (Number(master['num-slaves']) !== replicas) return false;
          } catch {
            return false;
          } finally {
            c.disconnect();
          }
        }
        return true;
      },
      'sentinels to discover each other and the replicas',
      20_000,
    );
  } catch (error) {
    await stop();
    throw error;
  }

  const askSentinels = async (): Promise<number[]> => {
    const ports: number[] = [];
    for (const s of sentinels) {
      if (s.proc.exitCode !== null || s.proc.signalCode !== null) continue;
      const c = oneShot(s.port, sentinelPassword);
      try {
        const r = (await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as [string, string];
        ports.push(Number(r[1]));
      } catch {
        // A paused or dead sentinel.
      } finally {
        c.disconnect();
      }
    }
    return ports;
  };
  const roleOf = async (port: number): Promise<string | undefined> => {
    const c = oneShot(port, masterPassword);
    try {
      return String(((await c.role()) as unknown[])[0]);
    } catch {
      return undefined;
    } finally {
      c.disconnect();
    }
  };

  const setup: SentinelSetup = {
    name,
    servers,
    sentinels,
    sentinelAddresses: sentinels.map((s) => s.address),
    async masterPort() {
      const ports = await askSentinels();
      if (!ports.length) throw new Error('no sentinel answered');
      return ports[0]!;
    },
    async master() {
      const port = await setup.masterPort();
      const server = servers.find((s) => s.port === port);
      if (!server) throw new Error(`master on ${port} is none of ours`);
      return server;
    },
    async waitForNewMaster(oldPort, timeoutMs = 20_000) {
      let to = 0;
      await waitFor(
        async () => {
          const ports = await askSentinels();
          if (!ports.length || ports.some((p) => p === oldPort || p !== ports[0])) return false;
          to = ports[0]!;
          return (await roleOf(to)) === 'master';
        },
        `sentinels to report a master other than ${oldPort}`,
        timeoutMs,
      );
      return to;
    },
    async failover() {
      const from = await setup.masterPort();
      const c = oneShot(sentinels[0]!.port, sentinelPassword);
      try {
        // INPROG / NOGOODSLAVE right after an earlier failover: try again for a while.
        await waitFor(
          async () => {
            try {
              await c.call('SENTINEL', 'FAILOVER', name);
              return true;
            } catch (error) {
              if (/INPROG|NOGOODSLAVE/.test((error as Error).message)) return false;
              throw error;
            }
          },
          'SENTINEL FAILOVER to be accepted',
          20_000,
        );
      } finally {
        c.disconnect();
      }
      const to = await setup.waitForNewMaster(from);
      return { from, to };
    },
    async waitForReplica(port, timeoutMs = 30_000) {
      await waitFor(
        async () => {
          const c = oneShot(port, masterPassword);
          try {
            const info = await c.info('replication');
            const masterPort = await setup.masterPort();
            return (
              /role:slave/.test(info) &&
              new RegExp(`master_port:${masterPort}\\b`).test(info) &&
              /master_link_status:up/.test(info)
            );
          } catch {
            return false;
          } finally {
            c.disconnect();
          }
        },
        `${port} to be a replica of the current master`,
        timeoutMs,
      );
    },
    admin: adminOf,
    sentinelOption() {
      return {
        sentinels: sentinels.map((s) => s.address),
        name,
        ...(sentinelPassword ? { sentinelPassword } : {}),
      };
    },
    stop,
  };
  return setup;
}

/** beforeAll/afterAll wrapper: one deployment per test file, every client made through it closed. */
export function useSentinelSetup(options: SentinelSetupOptions = {}) {
  let setup: SentinelSetup | undefined;
  const clients: RedisClient[] = [];
  const duplicates: Redis[] = [];
  beforeAll(async () => {
    setup = await startSentinelSetup(options);
  }, 60_000);
  afterAll(async () => {
    await Promise.all(clients.map((c) => closeRedis(c, { timeoutMs: 200 })));
    // ioredis 6 leaves a failoverDetector's sentinel subscriptions open after quit() (closeRedis
    // sends QUIT); disconnect() cleans them up.
    for (const c of [...clients, ...duplicates]) (c as Redis).disconnect();
    await setup?.stop();
  }, 30_000);
  return {
    get setup(): SentinelSetup {
      if (!setup) throw new Error('sentinel setup not started yet');
      return setup;
    },
    /** A createRedis sentinel client. */
    client(extra: Omit<CreateRedisOptions, 'failFast'> = {}): RedisClient {
      const c = createRedis({
        sentinel: this.setup.sentinelOption(),
        password: options.masterPassword,
        logger: false,
        ...extra,
      });
      clients.push(c);
      return c;
    },
    /** The app's own `new Redis({ sentinels, name })`, with the request-path limits an app would set. */
    own(extra: RedisOptions = {}): Redis {
      const c = new Redis({
        sentinels: this.setup.sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
        name: this.setup.name,
        sentinelPassword: options.sentinelPassword,
        password: options.masterPassword,
        commandTimeout: 500,
        maxRetriesPerRequest: 1,
        ...extra,
      });
      c.on('error', () => {});
      clients.push(c);
      // The kit's pub/sub connection is a duplicate(): tracked too, for the disconnect() below.
      const duplicate = c.duplicate.bind(c);
      c.duplicate = ((...args: Parameters<Redis['duplicate']>) => {
        const d = duplicate(...args);
        duplicates.push(d);
        return d;
      }) as Redis['duplicate'];
      return c;
    },
    track<T extends RedisClient>(c: T): T {
      clients.push(c);
      return c;
    },
  };
}

function packed(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < list.length; i += 2) out[list[i]!] = list[i + 1]!;
  return out;
}

export async function waitFor(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export { sleep };

/**
 * An admin connection for one question to a server or sentinel: no reconnects, and a dead or paused
 * process answers within 500 ms (an error) instead of holding the fixture up.
 */
function oneShot(port: number, password: string | undefined): Redis {
  const c = new Redis({
    port,
    host: '127.0.0.1',
    password,
    retryStrategy: () => null,
    commandTimeout: 500,
    connectTimeout: 500,
  });
  c.on('error', () => {});
  return c;
}
