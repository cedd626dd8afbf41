import type Redis from 'ioredis';
import type { BenchSettings } from './cli';
import { pathOf, runLoad } from './load';
import { commandCalls, resetCommandStats } from './redis-stats';
import type { Round, Skipped } from './results';
import type { RequestSpec, Scenario } from './scenarios/types';
import { startServer } from './servers';

interface Live {
  scenario: Scenario;
  port: number;
  request: RequestSpec;
  takeCommands(): Promise<Record<string, number>>;
  stop(): Promise<void>;
  rounds: Round[];
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One request before any load: a scenario answering the wrong status would measure the wrong path. */
async function probe(live: Omit<Live, 'rounds'>): Promise<string | undefined> {
  const { request, scenario } = live;
  const expected = scenario.status ?? 200;
  const path = pathOf(request, request.uniqueQuery ? 'probe' : 0);
  try {
    const response = await fetch(`http://127.0.0.1:${live.port}${path}`, {
      method: request.method ?? 'GET',
      headers: request.headers,
      body: request.body,
    });
    const body = await response.text();
    if (response.status !== expected) {
      return `probe answered ${response.status} instead of ${expected}: ${body.slice(0, 160)}`;
    }
    const header = scenario.header;
    const value = header && response.headers.get(header.name);
    if (header && value !== header.value)
      return `probe answered ${header.name}: ${value} instead of ${header.value}`;
    return undefined;
  } catch (error) {
    return `probe failed: ${error instanceof Error ? error.message : String(error)}`;
  }
}

/**
 * Starts every server of a group, warms each up, then runs interleaved rounds (A B C, C B A, …) so that
 * drift of a busy machine falls on every scenario alike. Around each measured run, the server's
 * sent-command count is taken and Redis's INFO commandstats reset and read.
 */
export async function measureGroup(
  scenarios: Scenario[],
  settings: BenchSettings,
  redisUrl: string,
  admin: Redis,
  log: (line: string) => void,
): Promise<{ measured: Array<{ scenario: Scenario; rounds: Round[] }>; skipped: Skipped[] }> {
  const skipped: Skipped[] = [];
  const live: Live[] = [];
  // Start-ups overlap (tsx compiles for a second or two); each server primes against its own keys.
  const starts = await Promise.all(scenarios.map((s) => startServer(s.id, redisUrl)));
  for (const [i, scenario] of scenarios.entries()) {
    const started = starts[i]!;
    if (!started.ok) {
      skipped.push({ id: scenario.id, label: scenario.label, reason: started.reason });
      log(`  skip ${scenario.id}: ${started.reason}`);
      continue;
    }
    const { port, request, takeCommands, stop } = started;
    const entry = { scenario, port, request, takeCommands, stop };
    const problem = await probe(entry);
    if (problem) {
      skipped.push({ id: scenario.id, label: scenario.label, reason: problem });
      log(`  skip ${scenario.id}: ${problem}`);
      await started.stop();
      continue;
    }
    live.push({ ...entry, rounds: [] });
  }
  const load = (entry: Live, seconds: number) =>
    runLoad(
      entry.port,
      entry.request,
      { ...settings, durationSeconds: seconds },
      { status: entry.scenario.status ?? 200, header: entry.scenario.header },
    );
  try {
    for (const entry of live) await load(entry, settings.warmupSeconds);
    for (let round = 0; round < settings.rounds; round++) {
      const order = round % 2 === 0 ? live : [...live].reverse();
      for (const entry of order) {
        await entry.takeCommands();
        await resetCommandStats(admin);
        const sample = await load(entry, settings.durationSeconds);
        // Work a middleware does after the response (cache stores…) belongs to this run too.
        await pause(50);
        const commands = await entry.takeCommands();
        entry.rounds.push({ ...sample, commands, redisCalls: await commandCalls(admin) });
      }
      log(`  round ${round + 1}/${settings.rounds} done`);
    }
  } finally {
    await Promise.all(live.map((entry) => entry.stop()));
  }
  return { measured: live.map(({ scenario, rounds }) => ({ scenario, rounds })), skipped };
}
