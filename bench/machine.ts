import { arch, cpus, loadavg, release, totalmem, type } from 'node:os';
import type Redis from 'ioredis';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  redis: string;
  /** 1-minute load average at the start: a busy machine makes every number noisier. */
  loadAverage: number;
}

export async function describeMachine(admin: Redis): Promise<Machine> {
  const info = await admin.info('server');
  const cpu = cpus();
  return {
    cpu: cpu[0]?.model.replace(/\s+/g, ' ').trim() ?? 'unknown',
    cores: cpu.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `${type()} ${release()} ${arch()}`,
    node: process.version,
    redis: /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown',
    loadAverage: Math.round(loadavg()[0]! * 100) / 100,
  };
}
