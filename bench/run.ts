/**
 * `npm run bench [-- --quick] [-- --only <pattern>]`: every scenario against one throwaway
 * redis-server, each in its own server process, load from this process. See the README, "Performance".
 */
import Redis from 'ioredis';
import { startRedisServer } from '../lib/testing';
import { type BenchSettings, parseSettings, USAGE } from './cli';
import { describeMachine } from './machine';
import { measureGroup } from './measure';
import { markdown } from './report/markdown';
import { writeResults } from './report/write';
import { type BenchReport, checkTargets, type GroupResult, type Skipped, summarizeGroup } from './results';
import { bare, GROUPS, SCENARIOS } from './scenarios/index';
import type { Group, Scenario } from './scenarios/types';

const log = (line: string) => process.stderr.write(`${line}\n`);

/**
 * The groups to run: `--only` filters a group's own scenarios; its references (bare Express always)
 * join any group that runs, as the yardsticks its ratios are measured against.
 */
function selectGroups(only: string | undefined): Array<{ group: Group; scenarios: Scenario[] }> {
  const pattern = only ? new RegExp(only, 'i') : undefined;
  const selected = [];
  for (const group of GROUPS) {
    const picked = group.scenarios.filter((s) => !pattern || pattern.test(s.id));
    if (picked.length === 0) continue;
    const references = [bare, ...(group.references ?? [])].filter((s) => !picked.includes(s));
    selected.push({ group, scenarios: [...references, ...picked] });
  }
  return selected;
}

async function bench(settings: BenchSettings): Promise<void> {
  const plan = selectGroups(settings.only);
  if (plan.length === 0) throw new Error(`--only ${settings.only} matches no scenario (see --list)`);
  const started = Date.now();
  const redis = await startRedisServer();
  const admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  try {
    const machine = await describeMachine(admin);
    const groups: GroupResult[] = [];
    const skipped: Skipped[] = [];
    for (const { group, scenarios } of plan) {
      log(`${group.title} (${scenarios.length} scenarios)`);
      const groupStart = Date.now();
      const load = { ...settings, connections: group.connections ?? settings.connections };
      const outcome = await measureGroup(scenarios, load, redis.url, admin, log);
      log(`  ${((Date.now() - groupStart) / 1000).toFixed(1)} s`);
      skipped.push(...outcome.skipped);
      if (outcome.measured.length > 0) groups.push(summarizeGroup(group, outcome.measured, bare.id));
    }
    const { list: _list, write: _write, ...shown } = settings;
    const report: BenchReport = {
      generatedAt: new Date().toISOString(),
      settings: shown,
      machine,
      groups,
      skipped,
      targets: checkTargets(groups, SCENARIOS),
    };
    process.stdout.write(`${settings.write ? writeResults(report) : markdown(report)}\n`);
    if (settings.write) log(`wrote bench/results/latest.{md,json,svg}`);
    log(`done in ${Math.round((Date.now() - started) / 1000)} s`);
  } finally {
    admin.disconnect();
    await redis.stop();
  }
}

async function main(): Promise<void> {
  const settings = parseSettings(process.argv.slice(2));
  if (settings === 'help') return void console.log(USAGE);
  if (settings.list) {
    for (const group of GROUPS) {
      console.log(`${group.id}: ${group.title}`);
      for (const s of group.scenarios) console.log(`  ${s.id.padEnd(36)} ${s.kind.padEnd(8)} ${s.label}`);
    }
    return;
  }
  await bench(settings);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
