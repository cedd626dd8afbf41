import type Redis from 'ioredis';

/** The runner's own commands, never counted against a scenario. */
const OWN = new Set(['info', 'config|resetstat', 'config']);

/** Zeroes INFO commandstats (CONFIG RESETSTAT) before a measured run. */
export async function resetCommandStats(admin: Redis): Promise<void> {
  await admin.config('RESETSTAT');
}

/** Calls per command since the last reset, from INFO commandstats. */
export async function commandCalls(admin: Redis): Promise<Record<string, number>> {
  const info = await admin.info('commandstats');
  const calls: Record<string, number> = {};
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const name = match[1]!;
    if (!OWN.has(name)) calls[name] = Number(match[2]);
  }
  return calls;
}

export function totalCalls(calls: Record<string, number>): number {
  return Object.values(calls).reduce((sum, n) => sum + n, 0);
}
