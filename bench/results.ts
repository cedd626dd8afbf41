import type { BenchSettings } from './cli';
import type { LoadSample } from './load';
import type { Machine } from './machine';
import type { Group, Scenario } from './scenarios/types';
import { median, spread } from './stats';

export interface Round extends LoadSample {
  /** Commands the app's Redis client sent during the round, per name. */
  commands: Record<string, number>;
  /** Calls Redis executed (INFO commandstats), per name: includes the calls Lua scripts make. */
  redisCalls: Record<string, number>;
}

export interface ScenarioResult {
  id: string;
  label: string;
  kind: Scenario['kind'];
  peer: string | undefined;
  rounds: Round[];
  reqPerSec: number;
  p50: number;
  p99: number;
  /** (max - min) / median of the rounds' req/s. */
  spread: number;
  commandsPerRequest: number;
  /** Per-request count of each command sent. */
  commandMix: Record<string, number>;
  /** Calls Redis executed per request, script internals included (INFO commandstats). */
  redisCallsPerRequest: number;
  vsBare: number | undefined;
  vsPeer: number | undefined;
  unexpected: number;
  errors: number;
}

export interface GroupResult {
  id: string;
  title: string;
  note: string | undefined;
  /** Connections, when the group sets its own instead of `--connections`. */
  connections?: number;
  results: ScenarioResult[];
}

export interface Skipped {
  id: string;
  label: string;
  reason: string;
}

export interface TargetCheck {
  id: string;
  label: string;
  target: string;
  measured: string;
  pass: boolean;
}

export interface BenchReport {
  generatedAt: string;
  settings: Omit<BenchSettings, 'list' | 'write'>;
  machine: Machine;
  groups: GroupResult[];
  skipped: Skipped[];
  targets: TargetCheck[];
}

/** Sums per-name counts over the rounds and divides by requests. */
function perRequest(counts: Array<Record<string, number>>, requests: number): Record<string, number> {
  const mix: Record<string, number> = {};
  for (const round of counts) {
    for (const [name, calls] of Object.entries(round)) mix[name] = (mix[name] ?? 0) + calls;
  }
  for (const name of Object.keys(mix)) mix[name] = requests ? mix[name]! / requests : Number.NaN;
  return mix;
}

const sum = (mix: Record<string, number>) => Object.values(mix).reduce((a, b) => a + b, 0);

function summarize(scenario: Scenario, rounds: Round[]): ScenarioResult {
  // Requests still in flight when a run stops did reach the server, so they count as well.
  const requests = rounds.reduce((total, r) => total + r.sent, 0);
  const commandMix = perRequest(
    rounds.map((r) => r.commands),
    requests,
  );
  const rates = rounds.map((r) => r.reqPerSec);
  return {
    id: scenario.id,
    label: scenario.label,
    kind: scenario.kind,
    peer: scenario.peer,
    rounds,
    reqPerSec: median(rates),
    p50: median(rounds.map((r) => r.p50)),
    p99: median(rounds.map((r) => r.p99)),
    spread: spread(rates),
    commandsPerRequest: sum(commandMix),
    commandMix,
    redisCallsPerRequest: sum(
      perRequest(
        rounds.map((r) => r.redisCalls),
        requests,
      ),
    ),
    vsBare: undefined,
    vsPeer: undefined,
    unexpected: rounds.reduce((total, r) => total + r.unexpected, 0),
    errors: rounds.reduce((total, r) => total + r.errors, 0),
  };
}

/** Medians and ratios of one group; ratios use the bare Express run interleaved with this group. */
export function summarizeGroup(
  group: Group,
  measured: Array<{ scenario: Scenario; rounds: Round[] }>,
  bareId: string,
): GroupResult {
  const results = measured.map(({ scenario, rounds }) => summarize(scenario, rounds));
  const byId = new Map(results.map((r) => [r.id, r]));
  const bare = byId.get(bareId);
  for (const result of results) {
    if (bare) result.vsBare = result.reqPerSec / bare.reqPerSec;
    const peer = result.peer ? byId.get(result.peer) : undefined;
    if (peer) result.vsPeer = result.reqPerSec / peer.reqPerSec;
  }
  return { id: group.id, title: group.title, note: group.note, connections: group.connections, results };
}

// Truncated, not rounded: 0.9698 must not print as the 0.970 it fails to reach.
const x = (n: number) => `${(Math.floor(n * 1000) / 1000).toFixed(3)}×`;

/** Checks each scenario's expectations (the targets) against what was measured. */
export function checkTargets(groups: GroupResult[], scenarios: ReadonlyMap<string, Scenario>): TargetCheck[] {
  const checks: TargetCheck[] = [];
  for (const group of groups) {
    const byId = new Map(group.results.map((r) => [r.id, r]));
    // The same scenario can run in two groups (e.g. at another connection count): say which.
    const where = group.connections ? ` (${group.connections} connections)` : '';
    for (const result of group.results) {
      const expect = scenarios.get(result.id)?.expect;
      if (!expect || result.kind === 'baseline') continue;
      const add = (target: string, measured: string, pass: boolean) =>
        checks.push({ id: result.id, label: result.label + where, target, measured, pass });
      if (expect.commandsPerRequest !== undefined) {
        add(
          `${expect.commandsPerRequest} Redis command(s) per request`,
          result.commandsPerRequest.toFixed(2),
          Math.abs(result.commandsPerRequest - expect.commandsPerRequest) < 0.01,
        );
      }
      if (expect.maxCommandsPerRequest !== undefined) {
        add(
          `≤ ${expect.maxCommandsPerRequest} Redis command(s) per request`,
          result.commandsPerRequest.toFixed(2),
          result.commandsPerRequest <= expect.maxCommandsPerRequest + 0.005,
        );
      }
      if (expect.minVsBare !== undefined && result.vsBare !== undefined) {
        add(`≥ ${x(expect.minVsBare)} bare Express`, x(result.vsBare), result.vsBare >= expect.minVsBare);
      }
      const other = expect.minVs && byId.get(expect.minVs.scenario);
      if (expect.minVs && other) {
        const ratio = result.reqPerSec / other.reqPerSec;
        add(`≥ ${x(expect.minVs.ratio)} ${other.label}`, x(ratio), ratio >= expect.minVs.ratio);
      }
    }
  }
  return checks;
}
